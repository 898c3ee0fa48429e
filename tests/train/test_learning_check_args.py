"""benchmarks/learning_check.py: the overrides it passes to `vito-train run` (a pure function)."""

import argparse
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("learning_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_and_set_overrides_reach_vito_train_run():
    check = _load()
    args = argparse.Namespace(steps=225, set=["image_size=64", "optimizer=sgd"])
    assert check.train_args(args) == [
        "--preset", "learn-check-cpu", "--no-progress",
        "--set", "max_steps=225", "--set", "image_size=64", "--set", "optimizer=sgd",
    ]  # fmt: skip
    assert check.train_args(argparse.Namespace(steps=None, set=[])) == [
        "--preset", "learn-check-cpu", "--no-progress",
    ]  # fmt: skip
