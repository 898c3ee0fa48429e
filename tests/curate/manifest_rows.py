"""``manifest_row(**overrides)``: one schema-complete manifest row for tests, kept and labelled unless told."""

from __future__ import annotations

from typing import Any

from videonet_curate import manifest as mf

# the reason a non-kept status gets when a test does not name one
_DEFAULT_REASON = {
    mf.STATUS_FAILED: "decode_error",
    mf.STATUS_MISSING: "missing_from_mirror",
}
_UNLABELLED = (mf.STATUS_FAILED, mf.STATUS_MISSING)


def manifest_row(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """Row ``i`` (clip ``c{i}`` of ``v{i}.mp4``, 0-10 s, kept, goldfish at 0.5); ``overrides`` replace columns.

    A non-kept status gets its reason code unless ``reason`` is given; failed and missing rows carry no
    label unless given.
    """
    status = overrides.get("status", mf.STATUS_KEPT)
    labelled = status not in _UNLABELLED
    values: dict[str, Any] = {
        "clip_id": f"c{i}",
        "source": "local",
        "source_id": f"v{i}.mp4",
        "path": f"v{i}.mp4",
        "start_s": 0.0,
        "end_s": 10.0,
        "status": status,
        "reason": None if status == mf.STATUS_KEPT else _DEFAULT_REASON.get(status, status),
        "label": 1 if labelled else None,
        "label_name": "goldfish" if labelled else None,
        "score": 0.5 if labelled else None,
    }
    values.update(overrides)
    return mf.empty_row(**values)
