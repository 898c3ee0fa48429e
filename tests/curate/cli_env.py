"""The environment a curation test gives the `videonet-curate` subprocesses it starts, as a user's shell
would: offline hub, no Ray usage stats, unbuffered output (a killed build's log is complete)."""

from __future__ import annotations

import os


def cli_env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
