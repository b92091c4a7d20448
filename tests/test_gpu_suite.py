"""bench/gpu_suite.py works before a GPU is lent: its CPU smoke mode runs every arm and passes its checks.

The two suite runs are marked ``gpu_suite`` (deselect with ``-m "not gpu_suite"``); they run in the default
``python -m pytest``. The smoke run takes about 2 minutes on 2 busy cores. The checks the suite makes on a
GPU (bf16 features against fp32, target met yes/no) are pinned here by hand-made inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_suite  # noqa: E402

ARM_NAMES = ["extract", "model", "stage1", "fusion", "demo"]


def _suite(out: Path, work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(REPO / "bench" / "gpu_suite.py"),
        "--out",
        str(out),
        "--work",
        str(work),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("gpu_suite")
    run = _suite(root / "out", root / "work", "--smoke")
    return run, root / "out"


@pytest.mark.gpu_suite
def test_smoke_run_writes_one_summary_and_every_arm_passes(smoke):
    run, out = smoke
    log = (out / "suite.log").read_text() if (out / "suite.log").exists() else ""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log[-6000:]
    assert sorted(p.name for p in out.iterdir()) == ["suite.log", "summary.json", "summary.md"]
    s = json.loads((out / "summary.json").read_text())
    assert s["version"] == gpu_suite.SUMMARY_VERSION and s["mode"] == "smoke"
    assert s["finished"] is True and s["all_passed"] is True
    assert 0 < s["seconds"] <= s["budget_s"]
    assert s["feature_tolerance"]["rel_rms"] == gpu_suite.FEATURE_TOL["rel_rms"]
    env = s["environment"]
    assert env["device_name"] == "cpu" and env["torch"] and env["python"]
    assert set(gpu_suite.PACKAGES) <= set(env["packages"])
    assert all(v == "ok" for v in env["imports"].values()), env["imports"]
    assert [a["arm"] for a in s["arms"]] == ARM_NAMES
    for a in s["arms"]:
        assert a["status"] == "pass", (a["arm"], a["error"], a["checks"])
        assert a["checks_total"] >= 3 and a["checks_passed"] == a["checks_total"], a["arm"]
        assert all(c["passed"] for c in a["checks"])
        assert a["settings"] and a["metrics"], a["arm"]
        assert all(k in a["metrics"] for k in a["headline"]), (a["arm"], a["headline"])
        assert 0 < a["seconds"] <= a["cap_s"] + 5
        # CPU sizes measure no GPU target
        assert a["target_met"] == ("unmeasured" if a["targets"] else "n/a"), a["arm"]
        assert all(t["met"] == "unmeasured" for t in a["targets"])
    arms = {a["arm"]: a for a in s["arms"]}
    ex = arms["extract"]["metrics"]
    assert ex["tiles"] > 0 and ex["ratio"] == pytest.approx(ex["naive_s"] / ex["rule_s"], rel=0.01)
    assert ex["features_rel_rms"] < 1e-4  # fp32 against fp32 on the CPU: both arms compared tile by tile
    assert arms["model"]["metrics"]["bf16_rel_rms"] > 1e-4  # bf16 really ran (CPU autocast)
    st = arms["stage1"]["metrics"]  # speeds are not asserted (bench/ prints them), the arithmetic is
    assert st["ratio"] == pytest.approx(st["per_bag_s_per_epoch"] / st["batched_s_per_epoch"], rel=0.01)
    assert arms["fusion"]["metrics"]["folds_done"] == 2
    assert (
        arms["demo"]["metrics"]["jobs"] == arms["demo"]["metrics"]["jobs_done"] == 7
    )  # one Stage 1 job trains both folds
    md = (out / "summary.md").read_text()
    assert "smoke run" in md and all(f"| {name} | pass |" in md for name in ARM_NAMES)


@pytest.mark.gpu_suite
def test_an_arm_over_its_cap_is_recorded_timed_out_and_the_summary_still_written(tmp_path):
    run = _suite(
        tmp_path / "out", tmp_path / "work", "--smoke", "--only", "model", "--cap", "model=1", timeout=120
    )
    assert run.returncode == 1
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {a["arm"]: a["status"] for a in s["arms"]}
    assert status == {"extract": "skipped", "model": "timed_out", "stage1": "skipped", "fusion": "skipped",
                      "demo": "skipped"}  # fmt: skip
    assert s["finished"] is True and s["all_passed"] is False
    assert "timed_out" in (tmp_path / "out" / "summary.md").read_text()


def test_feature_agreement_passes_bf16_like_error_and_fails_real_mistakes():
    rng = np.random.default_rng(0)
    # like a ViT's features: a large component shared by every tile plus a 5% part that tells tiles apart
    common = rng.normal(size=(1, 64))
    ref = common + 0.05 * rng.normal(size=(200, 64))
    bf16 = ref + 0.005 * rng.normal(size=ref.shape)  # rel. error 0.5%, about what bf16 gave (0.6%)
    stats = gpu_suite.feature_agreement(ref, bf16)
    assert stats["rel_rms"] == pytest.approx(0.005, rel=0.1)
    assert stats["spread"] == pytest.approx(0.05, rel=0.1)
    assert stats["err_over_spread"] == pytest.approx(0.1, rel=0.1)
    assert gpu_suite.agreement_passes(stats)
    assert gpu_suite.agreement_passes(gpu_suite.feature_agreement(ref, ref))
    # tiles in another order (each row's cosine to its true row is still ~0.999): the error is the
    # whole tile-to-tile spread, sqrt(2) of it
    order = rng.permutation(len(ref))
    cosine = np.sum(ref * ref[order], 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ref[order], axis=1)
    assert cosine.min() > 0.99
    shuffled = gpu_suite.feature_agreement(ref, ref[order])
    assert shuffled["err_over_spread"] == pytest.approx(np.sqrt(2), rel=0.1)
    assert not gpu_suite.agreement_passes(shuffled)
    assert not gpu_suite.agreement_passes(gpu_suite.feature_agreement(ref, ref * 1.05))  # 5% scale
    constant = np.repeat(common, 10, axis=0)  # tile-independent features make the check vacuous
    assert not gpu_suite.agreement_passes(gpu_suite.feature_agreement(constant, constant))
    with pytest.raises(ValueError, match="shapes differ"):
        gpu_suite.feature_agreement(ref, ref[:-1])


def test_target_met_is_yes_no_or_unmeasured():
    t = gpu_suite.Target("tiles_per_s", ">=", 2500, "")
    assert t.met({"tiles_per_s": 2500.0}, True) == "yes"
    assert t.met({"tiles_per_s": 2499.0}, True) == "no"
    assert t.met({"tiles_per_s": 9999.0}, False) == "unmeasured"  # CPU smoke: no GPU figure
    assert t.met({}, True) == "unmeasured"  # the arm stopped before measuring it
    assert t.met({"tiles_per_s": None}, True) == "unmeasured"
    u = gpu_suite.Target("total_s", "<=", 300, "")
    assert u.met({"total_s": 299.0}, True) == "yes" and u.met({"total_s": 301.0}, True) == "no"
    assert gpu_suite._overall_met([]) == "n/a"
    assert gpu_suite._overall_met([{"met": "yes"}, {"met": "unmeasured"}]) == "unmeasured"
    assert gpu_suite._overall_met([{"met": "no"}, {"met": "unmeasured"}]) == "no"
    assert gpu_suite._overall_met([{"met": "yes"}, {"met": "yes"}]) == "yes"


def test_snakemake_job_count_reads_the_job_stats_total():
    log = "Building DAG of jobs...\nJob stats:\njob      count\n-----  -------\nstage1       4\nall    1\ntotal       27\n"
    assert gpu_suite.snakemake_job_count(log + "\nJob stats:\ntotal 3\n") == 27
    assert gpu_suite.snakemake_job_count("no stats here") is None


def test_arms_and_caps_fit_the_budget():
    assert list(gpu_suite.ARMS) == ARM_NAMES
    assert sum(a.cap_s for a in gpu_suite.ARMS.values()) <= gpu_suite.DEFAULT_BUDGET_S < 8 * 60
    with pytest.raises(SystemExit, match="ARM=SECONDS"):
        gpu_suite.parse_caps(["nosuch=3"])
    assert gpu_suite.parse_caps(["demo=12"]) == {"demo": 12.0}
