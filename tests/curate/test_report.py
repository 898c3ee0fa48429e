"""The report: statistics, four PNG plots, summary JSON and an HTML page, from a written manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from videonet_curate.cli import app
from videonet_curate.embeddings import embeddings_table
from videonet_curate.manifest import atomic_write_table, empty_row, rows_to_table, write_manifest
from videonet_curate.report import PLOTS, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_build_output(out: Path, *, n: int = 60, with_embeddings: bool = True) -> Path:
    """A small but complete build output: every status, two sources, embeddings with one duplicate pair."""
    rng = np.random.default_rng(1)
    statuses = ["kept"] * (n - 6) + ["failed", "missing", "low_score", "duplicate", "rebalanced_out", "kept"]
    reasons = {
        "failed": "network",
        "missing": "missing_from_mirror",
        "low_score": "low_score",
        "duplicate": "duplicate",
        "rebalanced_out": "rebalanced_out",
    }
    rows = []
    for i, status in enumerate(statuses):
        labelled = status not in ("failed", "missing")
        rows.append(
            empty_row(
                clip_id=f"clip{i:03d}",
                source="kinetics" if i % 3 else "local",
                source_id=f"vid{i}",
                path=f"clips/clip{i:03d}.mp4",
                start_s=0.0,
                end_s=10.0,
                status=status,
                reason=reasons.get(status),
                label=int(rng.integers(0, 1000)) if labelled else None,
                label_name="cockatoo" if labelled else None,
                score=float(rng.random()) if labelled else None,
                dup_of="clip000" if status == "duplicate" else None,
            )
        )
    write_manifest(
        rows_to_table(rows),
        out / "manifest.parquet",
        model_id="efficientnet-lite0",
        prototype_set="imagenet-1k-classifier",
        config={"curation": {"dup_threshold": 0.9, "target": "imagenet"}},
    )
    if with_embeddings:
        e = rng.standard_normal((n, 16)).astype(np.float32)
        e[n - 3] = e[0] + 0.01
        atomic_write_table(embeddings_table([r["clip_id"] for r in rows], e), out / "embeddings.parquet")
    return out


def test_write_report_writes_plots_summary_and_html(tmp_path: Path) -> None:
    out = write_build_output(tmp_path / "out")
    paths = write_report(out)
    assert paths.directory == out / "report"
    assert set(paths.plots) == set(PLOTS)
    for png in paths.plots.values():
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000
    summary = json.loads(paths.summary.read_text())
    assert summary["rows"] == 60 and summary["kept"] == 55
    assert summary["status_counts"]["duplicate"] == 1
    assert summary["reason_counts"]["network"] == 1
    assert summary["model_id"] == "efficientnet-lite0"
    assert summary["dup_threshold"] == 0.9
    assert summary["nearest_similarity_quantiles"]["max"] > 0.99  # the planted pair
    assert 0.9 < summary["tv_to_target"] <= 1.0  # 55 clips cannot cover 1,000 classes
    page = paths.html.read_text()
    for png in paths.plots.values():
        assert f'src="{png.name}"' in page
    assert not list(paths.directory.glob(".*"))  # no temporary files left behind


def test_report_without_embeddings_and_bad_target(tmp_path: Path) -> None:
    out = write_build_output(tmp_path / "out", with_embeddings=False)
    summary = json.loads(write_report(out, target="uniform").summary.read_text())
    assert "nearest_similarity_quantiles" not in summary and summary["target"] == "uniform"
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(out), "--target", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no manifest" in result.output


def test_report_command(tmp_path: Path) -> None:
    out = write_build_output(tmp_path / "out")
    result = CliRunner().invoke(app, ["report", str(out), "--target", "imagenet"])
    assert result.exit_code == 0, result.output
    assert (out / "report" / "index.html").is_file()


def test_report_command_takes_a_file_uri_and_refuses_object_storage(tmp_path: Path) -> None:
    out = write_build_output(tmp_path / "out", with_embeddings=False)
    runner = CliRunner()
    result = runner.invoke(app, ["report", f"file://{out}"])
    assert result.exit_code == 0, result.output
    assert (out / "report" / "index.html").is_file()
    assert not (Path.cwd() / "file:").exists()  # not a directory named "file:" beside us
    result = runner.invoke(app, ["report", f"file://{out / 'manifest.parquet'}", "--target", "uniform"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report" / "summary.json").read_text())["target"] == "uniform"
    result = runner.invoke(app, ["report", "s3://bucket/run"])
    assert result.exit_code == 2 and "local build directory" in result.output
