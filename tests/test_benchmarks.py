"""The benchmark scripts run (on tiny settings) and judge their rows as they say; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def row(**changes):
    base = {"arch": "cnnds", "seed": 0, "dice_ge5ml": 0.8, "dice_all_bleeds": 0.6, "blood_free_median_ml": 0.0,
            "real_scan_ml": 0.5, "train_minutes": 5.0, "peak_mb": 900.0, "threshold": 0.6, "epochs": 20,
            "best_epoch": 15}  # fmt: skip
    base.update(changes)
    return base


def test_learning_benchmark_judges_each_target():
    bench = load("bench_learning")
    assert all(bench.verdict(row()).values())
    assert not bench.verdict(row(dice_ge5ml=0.74))["dice_ge5ml"]
    assert not bench.verdict(row(real_scan_ml=2.5))["real_scan_ml"]
    assert not bench.verdict(row(blood_free_median_ml=1.2))["blood_free_median_ml"]
    assert not bench.verdict(row(peak_mb=2100.0))["peak_mb"]
    # Patel has its own, lower Dice targets and a longer time budget
    assert bench.verdict(row(arch="patel", dice_ge5ml=0.61, dice_all_bleeds=0.41, train_minutes=11.0))[
        "dice_ge5ml"
    ]
    assert not bench.verdict(row(arch="patel", train_minutes=12.5))["train_minutes"]
    table = bench.markdown([row(), row(seed=1, real_scan_ml=14.0)])
    assert "14.0 ✗" in table and table.count("\n") == 3
    assert "| 0.747 ✗ |" in bench.markdown([row(dice_ge5ml=0.747)])  # a miss never rounds up to the target
    untimed = row(
        train_minutes=float("nan"), peak_mb=float("nan")
    )  # --evaluate: a checkpoint trained elsewhere
    assert all(bench.verdict(untimed).values()) and "| – | – |" in bench.markdown([untimed])


@pytest.mark.slow
def test_learning_benchmark_reads_settings_to_change():
    bench = load("bench_learning")
    assert bench.parse_setting("hu_window=-200,200") == ("hu_window", (-200, 200))
    assert bench.parse_setting("input_size=(148, 148, 44)") == ("input_size", (148, 148, 44))
    assert bench.parse_setting("optimizer=sgd") == ("optimizer", "sgd")
    assert bench.parse_setting("lr=2e-3") == ("lr", 0.002)
    key, value = bench.parse_setting("hu_window=-200,200")
    assert bench.parse_setting(f"{key}={value!r}") == (key, value)  # what the parent hands its workers
    with pytest.raises(Exception, match="KEY=VALUE"):
        bench.parse_setting("hu_window")


def test_gpu_full_check_runs_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("HEMOLAB_WORKSPACE", str(tmp_path / "ws"))
    check = load("gpu_full_check")
    out = tmp_path / "check.json"
    assert check.main(["--device", "cpu", "--profile", "tiny", "--seconds", "1", "--cases", "4",
                       "--arch", "cnnds", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    (net,) = report["networks"]
    assert net["arch"] == "cnnds" and net["epochs"] >= 1
    assert {"loss_falls", "seconds_per_epoch", "inference_seconds[real GE head CT]"} <= set(net)


def test_patel_tile_benchmark_gives_the_same_probabilities_at_every_size(capsys):
    bench = load("bench_patel_tiles")
    assert bench.main(["--repeats", "1", "--shape", "72", "72", "20"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [tuple(r["input_size"]) for r in rows] == list(bench.SIZES)
    assert rows[0]["tiles"] > rows[1]["tiles"] == 1  # the larger tile takes this volume whole
    assert all(r["max_abs_difference"] < 1e-5 for r in rows)  # valid convolutions: the tile size is free
