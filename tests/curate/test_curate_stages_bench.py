"""benchmarks/curate_stages.py: the figures it derives from its rounds (pure functions)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "curate_stages.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("curate_stages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_build_over_bound_is_the_median_rate_over_the_median_bound(bench):
    def round_(alone_s: float, staged_s: float, fused_s: float | None = None):
        build = bench.Build(staged_s, {"model actor": staged_s})
        fused = bench.Build(fused_s, {}) if fused_s else None
        return bench.Round(load=1.0, decode_s=alone_s / 2, embed_s=alone_s / 2, alone_wall=alone_s,
                           staged=build, fused=fused)  # fmt: skip

    # 100 clips on 2 cores: alone 100, 200 (an outlier round) and 125 CPU s -> bounds 2.0, 1.0, 1.6 clips/s
    rounds = [round_(100.0, 60.0, 90.0), round_(200.0, 50.0), round_(125.0, 80.0)]
    summary = bench.summarize(rounds, clips=100, cores=2)
    assert summary.bounds == pytest.approx([2.0, 1.0, 1.6])
    assert summary.bound == pytest.approx(1.6)
    assert summary.ratio == pytest.approx((100 / 60.0) / 1.6)  # the median rate is the 60 s build's
    assert summary.round_ratios == pytest.approx([100 / 60 / 2.0, 100 / 50 / 1.0, 100 / 80 / 1.6])
    assert summary.fused_ratio == pytest.approx((100 / 90.0) / 1.6)  # measured in the first round only
    assert bench.spread([3.0, 1.0, 2.0]) == "2.00 (1.00-3.00)"


def test_rounds_flags_are_checked(bench, capsys):
    assert bench.parse_args(["--rounds", "3", "--fused-rounds", "0"]).rounds == 3
    for argv in (["--rounds", "0"], ["--rounds", "2", "--fused-rounds", "3"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.parse_args(argv)
        assert exit_info.value.code == 2
    assert "--fused-rounds" in capsys.readouterr().err
