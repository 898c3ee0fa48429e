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
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("no-such-preset")


def test_preset_file_round_trips(tmp_path):
    cfg = resolve_config("cpu-smoke", ["seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert resolve_config(tmp_path / "config.yaml") == cfg
    assert TrainConfig().validate().temperature == 0.1
