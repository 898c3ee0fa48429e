"""The Source seam: the registry, and what sources put into the resume fingerprint (pinned: a change
would label every user's finished shards again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from videonet_curate.fetch.options import FetchOptions
from videonet_curate.labeling import LabelingConfig
from videonet_curate.pipeline import fingerprint_settings
from videonet_curate.shards import fingerprint
from videonet_curate.sources.base import SourceArgs, SourceInputError, SourceOptions
from videonet_curate.sources.registry import SOURCES, make_source


def test_the_registry_names_every_source_and_refuses_others(tmp_path: Path) -> None:
    assert list(SOURCES) == ["local", "kinetics", "urls"]
    for name in SOURCES:
        assert make_source(name, SourceArgs(out_dir=tmp_path)).name == name
    with pytest.raises(
        SourceInputError, match="unknown --source 'youtube'; expected one of: local, kinetics, urls"
    ):
        make_source("youtube", SourceArgs(out_dir=tmp_path))


def test_run_fingerprints_are_the_ones_earlier_builds_wrote(tmp_path: Path) -> None:
    local = make_source("local", SourceArgs(out_dir=tmp_path, input_path=tmp_path))
    assert fingerprint(fingerprint_settings(LabelingConfig(), **local.run_settings())) == "388601ec9dd5"
    options = SourceOptions(
        retry_failed=("network", "blocked"),
        fetch=FetchOptions(url_template="http://h/{youtube_id}.mp4", min_height=240, max_rps=9.0),
    )
    kinetics = make_source("kinetics", SourceArgs(out_dir=tmp_path, min_clip_seconds=2.0, options=options))
    settings = kinetics.run_settings()
    assert settings["fetch"]["min_clip_seconds"] == "2.0"  # --min-clip-seconds reaches the fetch options
    assert "max_rps" not in settings["fetch"]  # politeness does not change a clip's bytes
    config = LabelingConfig(frames_per_clip=4)
    assert fingerprint(fingerprint_settings(config, **settings)) == "c276c05686f1"


def test_the_manifest_records_the_source_options_under_their_old_keys() -> None:
    recorded = SourceOptions(classes=("a", "b"), ytdlp_opt=("geo_bypass=true",)).as_config()
    assert sorted(recorded) == sorted(
        "annotations split limit mirror_dir classes url_template min_height max_retries socket_timeout_s "
        "max_rps max_concurrent cookies proxy ytdlp_opt retry_failed".split()
    )
    assert recorded["classes"] == ["a", "b"] and recorded["ytdlp_opt"] == ["geo_bypass=true"]
