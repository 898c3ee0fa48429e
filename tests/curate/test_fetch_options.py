"""The yt-dlp option allow-list and FetchOptions checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from videonet_curate.fetch.options import FetchConfigError, FetchOptions, parse_ytdlp_options
from videonet_curate.fetch.ytdlp import ytdlp_params


def test_allowed_options_are_parsed_to_types() -> None:
    opts = parse_ytdlp_options(
        ["force-ipv4=true", "ratelimit=500000", "extractor_args=youtube:player_client=web,ios"]
    )
    assert opts == {
        "force_ipv4": True,
        "ratelimit": 500000,
        "extractor_args": {"youtube": {"player_client": ["web", "ios"]}},
    }


@pytest.mark.parametrize(
    "pair",
    [
        "exec=rm -rf /",
        "exec_cmd=x",
        "postprocessors=x",
        "external_downloader=aria2c",
        "outtmpl=/etc/x",
        "external_downloader_args=x",
        "paths=/",
        "cookiesfrombrowser=chrome",
    ],
)
def test_command_execution_and_redirect_options_are_refused(pair: str) -> None:
    with pytest.raises(FetchConfigError, match="not allowed"):
        parse_ytdlp_options([pair])


def test_options_cannot_override_the_safe_parameters(tmp_path: Path) -> None:
    with pytest.raises(FetchConfigError):
        FetchOptions(ytdlp_options={"exec_cmd": "x"})
    params = ytdlp_params(FetchOptions(ytdlp_options={"force_ipv4": True}), tmp_path, segment=(1.0, 3.0))
    assert params["force_ipv4"] is True and params["retries"] == 0 and params["force_keyframes_at_cuts"]
    assert "postprocessors" not in params and "exec_cmd" not in params
    assert params["external_downloader_args"]["ffmpeg_i"][0] == "-rw_timeout"


def test_fetch_options_validate(tmp_path: Path) -> None:
    with pytest.raises(FetchConfigError, match="names no field"):
        FetchOptions(url_template="http://host/video.mp4")
    with pytest.raises(FetchConfigError, match="cookies"):
        FetchOptions(cookies=tmp_path / "none.txt")
    with pytest.raises(FetchConfigError, match="--mirror"):
        FetchOptions(mirror_dir=tmp_path / "absent")
