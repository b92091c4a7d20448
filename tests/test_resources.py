"""Resources: every rule that runs something declares threads, mem_mb and runtime; the GPU rules declare
gpu=1; and `--resources gpu=1` really keeps GPU jobs one at a time (a tiny workflow with two GPU jobs,
run with and without the limit, so the check can fail).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GPU_LOCK = REPO / "tests" / "workflows" / "gpu_lock" / "Snakefile"

# The rules that run a model on the accelerator (SPEC sections 4-8). A new GPU rule is added here on
# purpose, so the profile's GPU partition mapping (profiles/slurm) is updated with it.
GPU_RULES = {"extract_tma", "stage1", "fusion", "fusion_joint", "comparator"}


@pytest.fixture(scope="module")
def rules(workflow_rules) -> list[dict]:
    return workflow_rules


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def test_every_rule_declares_threads_mem_and_runtime(rules):
    problems = []
    for r in rules:
        if r["norun"]:
            continue
        where = f"rule {r['name']} ({Path(r['snakefile']).relative_to(REPO)}:{r['lineno']})"
        declared = r["declared_resources"]
        if not _positive_int(r["declared_threads"]):
            problems.append(
                f"{where}: `threads:` not declared as a positive number ({r['declared_threads']})"
            )
        for key in ("mem_mb", "runtime"):
            if key not in declared:
                problems.append(f"{where}: resources lack {key}")
            elif not (_positive_int(declared[key]) or str(declared[key]).startswith("<")):
                problems.append(f"{where}: {key}={declared[key]!r} is not a positive number (or a function)")
        if not r["has_log"]:
            problems.append(f"{where}: no `log:`")
    assert not problems, "\n".join(problems)


def test_gpu_rules_declare_one_gpu_and_no_other_rule_does(rules):
    names = {r["name"] for r in rules}
    missing = GPU_RULES - names
    assert not missing, (
        f"GPU rules not in the workflow: {sorted(missing)} (update GPU_RULES and profiles/slurm)"
    )
    problems = []
    for r in rules:
        gpu = r["declared_resources"].get("gpu")
        if r["name"] in GPU_RULES and gpu != 1:
            problems.append(f"rule {r['name']}: GPU rule must declare resources gpu=1, has {gpu!r}")
        if r["name"] not in GPU_RULES and gpu is not None:
            problems.append(
                f"rule {r['name']}: declares gpu={gpu!r} but is not in GPU_RULES (tests/test_resources.py)"
            )
    assert not problems, "\n".join(problems)


def test_slurm_profile_sends_every_gpu_rule_to_the_gpu_partition():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    per_rule = profile.get("set-resources", {})
    for rule in sorted(GPU_RULES):
        assert per_rule.get(rule, {}).get("slurm_partition") == "$HAF_SLURM_GPU_PARTITION", rule


def test_local_profile_limits_gpu_jobs_to_one():
    profile = yaml.safe_load((REPO / "profiles" / "local" / "config.v8+.yaml").read_text())
    assert profile["resources"]["gpu"] == 1


def _run_gpu_lock(workdir: Path, extra: list[str]) -> list[tuple[int, int]]:
    """Run the two-GPU-job workflow; return each job's (start, end) in ns."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "all",  # the target first: `--resources` takes any number of values
        "--snakefile",
        str(GPU_LOCK),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE_PROFILE")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child on timeout
        pytest.fail(f"snakemake did not finish within {exc.timeout} s: {' '.join(cmd)}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    intervals = []
    for name in ("a", "b"):
        start, end = (int(x) for x in (workdir / "stamps" / f"{name}.txt").read_text().split())
        assert end > start
        intervals.append((start, end))
    return intervals


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_gpu_resource_limit_serialises_gpu_jobs(tmp_path):
    limited = _run_gpu_lock(tmp_path / "limited", ["--resources", "gpu=1"])
    assert not _overlap(*limited), f"with --resources gpu=1 the two GPU jobs ran together: {limited}"
    # control: the same workflow without the limit runs them together, so the assertion above can fail
    free = _run_gpu_lock(tmp_path / "free", [])
    assert _overlap(*free), f"without a gpu limit the two jobs should overlap on 2 cores: {free}"


def _dry_run(profile: str, workdir: Path, env: dict[str, str]) -> str:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--profile",
        profile,
        "--snakefile",
        str(REPO / "tests" / "workflows" / "slurm_mini" / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-3000:]}"
    return output


def _job_resources(output: str) -> dict[str, str]:
    """{rule: its 'resources:' line} from a dry run's job listing."""
    found, rule = {}, None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            found[rule] = line.strip()
    return found


def test_no_default_profile_folder():
    # an empty profiles/default/ is picked up by Snakemake and breaks every run (issue 2)
    assert not (REPO / "profiles" / "default").exists()


def test_profiles_parse_in_a_dry_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE_PROFILE")}
    env.update(HAF_SLURM_PARTITION="cpuq", HAF_SLURM_GPU_PARTITION="gpuq", HAF_SLURM_ACCOUNT="acct")
    slurm = _job_resources(_dry_run("profiles/slurm", tmp_path / "slurm", env))
    assert "slurm_partition=cpuq" in slurm["manifest"] and "slurm_account=acct" in slurm["manifest"]
    assert "slurm_partition=gpuq" in slurm["extract_tma"] and "gpu=1" in slurm["extract_tma"]
    local = _job_resources(_dry_run("profiles/local", tmp_path / "local", env))
    assert "gpu=1" in local["extract_tma"] and "slurm_partition" not in local["extract_tma"]
