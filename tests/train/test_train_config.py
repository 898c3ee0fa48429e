import pytest

from vito_train.config import ConfigError, TrainConfig, preset_names, resolve_config, save_config


def test_bundled_presets_resolve():
    assert {"paper-r50", "cpu-smoke"} <= set(preset_names())
    paper = resolve_config("paper-r50")
    assert (paper.arch, paper.image_size, paper.pooling) == ("resnet50", 224, "multiscale")
    smoke = resolve_config("cpu-smoke")
    assert smoke.arch == "resnet18" and smoke.image_size <= 112 and smoke.device == "cpu"


def test_overrides_are_typed_and_checked(tmp_path):
    cfg = resolve_config("cpu-smoke", ["max_steps=40", "base_lr=0.5", "compile=true", "pooling=gap"])
    assert (cfg.max_steps, cfg.base_lr, cfg.compile, cfg.pooling) == (40, 0.5, True, "gap")
    with pytest.raises(ConfigError, match="not a config key"):
        resolve_config("cpu-smoke", ["max_stepz=3"])
    with pytest.raises(ConfigError, match="integer"):
        resolve_config("cpu-smoke", ["max_steps=many"])
    with pytest.raises(ConfigError, match="pooling"):
        resolve_config("cpu-smoke", ["pooling=max"])
    assert resolve_config("cpu-smoke", ["optimizer=sgd"]).optimizer == "sgd"
    with pytest.raises(ConfigError, match="optimizer"):
        resolve_config("cpu-smoke", ["optimizer=adam"])
    with pytest.raises(ConfigError, match="blur_p_scale"):
        resolve_config("cpu-smoke", ["blur_p_scale=2"])
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("no-such-preset")


def test_preset_file_round_trips(tmp_path):
    cfg = resolve_config("cpu-smoke", ["seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert resolve_config(tmp_path / "config.yaml") == cfg
    assert TrainConfig().validate().temperature == 0.1


def test_ablation_presets_change_one_thing_each(tmp_path):
    """Each ablation cell is paper-r50 with the one key the paper ablates changed, and says which cell."""
    from vito_train.config import preset_cell

    paper = resolve_config("paper-r50").to_dict()
    changed = {
        "ablate-crop-0.08": {"crop_min_scale": 0.08},
        "ablate-pool-gap": {"pooling": "gap"},
        "ablate-pool-attention": {"pooling": "attention"},
        "ablate-offset-0": {"max_gap_s": 0.0},
        "ablate-uncurated": {},
        "ablate-images": {"max_gap_s": 0.0},
    }
    for name, expected in changed.items():
        cell = resolve_config(name).to_dict()
        diff = {k: v for k, v in cell.items() if k != "notes" and paper[k] != v}
        assert diff == expected, name
        assert preset_cell(name) and preset_cell(name) != preset_cell("paper-r50")


def test_extends_chain_and_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\nmax_steps: 7\n")
    (tmp_path / "b.yaml").write_text("extends: cpu-smoke\nseed: 3\n")
    cfg = resolve_config(tmp_path / "a.yaml")
    assert (cfg.max_steps, cfg.seed, cfg.arch) == (7, 3, "resnet18")
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="extends itself"):
        resolve_config(tmp_path / "a.yaml")


def test_config_archs_are_the_backbones_the_model_builds():
    """config.ARCHS (kept torch-free for validation) names exactly the archs build_resnet knows."""
    from vito_train.config import ARCHS
    from vito_train.model.backbone import STAGE_CHANNELS

    assert sorted(ARCHS) == sorted(STAGE_CHANNELS)
