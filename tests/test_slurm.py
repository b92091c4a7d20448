"""A real SLURM run with profiles/slurm: one-node SLURM on localhost (tests/slurm/cluster.py), a workflow
with a CPU rule and a GPU rule submitted through snakemake-executor-plugin-slurm, outputs compared with a
local run of the same workflow, and the SLURM job records checked (partition, GPU request).

Marked `slurm`. Needs root (apt install of slurm-wlm/munge when missing, daemons, /etc/slurm). When the
daemons cannot be started the test is skipped with the reason; with HAF_REQUIRE_SLURM=1 it fails instead
(for CI machines where SLURM is expected to work). Every wait is bounded; a hung Snakemake is killed by
its process group (it ignores SIGTERM while a status query hangs), the daemons are stopped by PID.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "tests" / "workflows" / "slurm_mini" / "Snakefile"
RUN_TIMEOUT_S = 300

_spec = importlib.util.spec_from_file_location("_haf_slurm_cluster", REPO / "tests" / "slurm" / "cluster.py")
cluster = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cluster  # dataclasses look their module up there
_spec.loader.exec_module(cluster)

pytestmark = pytest.mark.slurm


def _unavailable(reason: str):
    if os.environ.get("HAF_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (HAF_REQUIRE_SLURM=1) but unavailable: {reason}")
    pytest.skip(f"SLURM unavailable: {reason}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        _unavailable("not root (needs apt-get, /etc/slurm and the daemons)")
    try:
        install_s = cluster.ensure_installed()
    except cluster.Unavailable as exc:
        _unavailable(str(exc))
    cpus, mem_mb = cluster.default_size(max_cpus=32, max_mem_mb=32000)  # extract_tma asks for 16 threads
    node = cluster.Cluster(tmp_path_factory.mktemp("slurm"), cpus=cpus, mem_mb=mem_mb)
    start = time.monotonic()
    try:
        node.start()
    except cluster.Unavailable as exc:
        node.stop()
        _unavailable(str(exc))
    except BaseException:
        node.stop()
        raise
    sys.stderr.write(
        f"\n[slurm] apt install {install_s:.1f} s, daemons up in {time.monotonic() - start:.1f} s\n"
    )
    try:
        yield node
    finally:
        subprocess.run(
            ["scancel", f"--partition={cluster.PARTITION},{cluster.GPU_PARTITION}"],
            capture_output=True,
            timeout=30,
        )
        node.stop()


def _snakemake(args: list[str], env: dict[str, str], log: Path, timeout: float = RUN_TIMEOUT_S) -> float:
    """Run snakemake in its own process group; kill the group if it outlives `timeout`. Returns seconds."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            pytest.fail(
                f"snakemake {' '.join(args)} hung for {timeout} s; killed. Log tail:\n{log.read_text()[-3000:]}"
            )
    assert rc == 0, f"snakemake {' '.join(args)} exited {rc}:\n{log.read_text()[-4000:]}"
    return time.monotonic() - start


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE_PROFILE", "SLURM_"))}
    env.update(extra)
    return env


def _slurm_env() -> dict[str, str]:
    # what a user exports for profiles/slurm; any account name is accepted without accounting
    return _env(
        HAF_SLURM_PARTITION=cluster.PARTITION,
        HAF_SLURM_GPU_PARTITION=cluster.GPU_PARTITION,
        HAF_SLURM_ACCOUNT="hafci",
    )


SLURM_ARGS = [
    "--profile",
    "profiles/slurm",
    # only to shorten the test: the first status query after 2 s instead of 40 s (profile value)
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
]


def submitted_jobs(log_text: str) -> dict[str, list[str]]:
    """{rule: [SLURM job ids]} from Snakemake's 'submitted with SLURM jobid' lines."""
    jobs: dict[str, list[str]] = {}
    for m in re.finditer(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_([A-Za-z0-9_]+)/", log_text):
        jobs.setdefault(m.group(2), []).append(m.group(1))
    return jobs


def job_record(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, f"scontrol show job {job_id}: {out.stderr}"
    return dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_submitted_jobs_parses_snakemakes_submission_lines():
    text = (
        "Job 2 has been submitted with SLURM jobid 17 (log: /w/.snakemake/slurm_logs/rule_manifest/17.log).\n"
        "Job 1 has been submitted with SLURM jobid 18 (log: /w/.snakemake/slurm_logs/rule_extract_tma/18.log).\n"
    )
    assert submitted_jobs(text) == {"manifest": ["17"], "extract_tma": ["18"]}


def test_slurm_profile_runs_cpu_and_gpu_rules_like_a_local_run(slurm, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    common = ["--snakefile", str(MINI)]
    local_s = _snakemake(
        ["--profile", "profiles/local", *common, "--directory", str(local)], _env(), tmp_path / "local.log"
    )
    slurm_s = _snakemake(
        [*SLURM_ARGS, *common, "--directory", str(remote)], _slurm_env(), tmp_path / "slurm.log"
    )
    log_text = (tmp_path / "slurm.log").read_text()
    sys.stderr.write(f"\n[slurm] mini workflow: local {local_s:.1f} s, SLURM {slurm_s:.1f} s\n")

    # same outputs
    assert _files(local / "out") == _files(remote / "out")
    assert _files(local / "out"), "the workflow produced no outputs"

    # the jobs really ran under SLURM, each in the partition the profile maps it to, the GPU rule with a GPU
    assert "Falling back to 'sacct'" not in log_text, "the profile's squeue status command was not used"
    jobs = submitted_jobs(log_text)
    assert set(jobs) == {"manifest", "extract_tma"}, log_text[-3000:]
    cpu_job, gpu_job = job_record(jobs["manifest"][0]), job_record(jobs["extract_tma"][0])
    assert cpu_job["JobState"] == "COMPLETED" and gpu_job["JobState"] == "COMPLETED"
    assert cpu_job["Partition"] == cluster.PARTITION
    assert gpu_job["Partition"] == cluster.GPU_PARTITION
    assert "gpu:1" in gpu_job.get("TresPerJob", ""), gpu_job
    assert "gpu" not in cpu_job.get("TresPerJob", ""), cpu_job
    where_gpu = (remote / "where" / "extract_tma.env").read_text()
    assert f"SLURM_JOB_PARTITION={cluster.GPU_PARTITION}" in where_gpu
    assert "CUDA_VISIBLE_DEVICES=" in where_gpu, "SLURM did not bind the GPU gres to the GPU job"
    assert "SLURM_JOB_ID" not in (local / "where" / "extract_tma.env").read_text()


# ---- the pipeline itself -------------------------------------------------------------------------
SMALL_DEMO = "demo:\n  n_patients: 20\n"  # the schema's minimum; a few seconds per rule on 2 cores


def _pipeline_target() -> tuple[str, list[str]]:
    """The TMA feature index (through the GPU rule extract_tma) once its script exists, else the manifest."""
    import yaml

    encoder = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["extract"]["encoder"]
    if (REPO / "workflow" / "scripts" / "extract_tma_features.py").exists():
        return f"results/features/tma/{encoder}/index.tsv", ["demo_cohort", "manifest", "extract_tma"]
    warnings.warn(
        "workflow/scripts/extract_tma_features.py does not exist yet: the pipeline SLURM test stops at the "
        "manifest (no GPU rule); the GPU rule is covered by the mini workflow test",
        stacklevel=2,
    )
    return "results/cohort/manifest.tsv", ["demo_cohort", "manifest"]


def _same_h5(a: Path, b: Path) -> list[str]:
    import h5py
    import numpy as np

    problems = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if set(fa) != set(fb) or dict(fa.attrs).keys() != dict(fb.attrs).keys():
            return [f"{a.name}: different datasets/attributes"]
        for key in fa.attrs:
            if (
                key == "sources_digest"
            ):  # resume bookkeeping: hashes the core files' paths and mtimes, run-specific
                continue
            if not np.array_equal(np.asarray(fa.attrs[key]), np.asarray(fb.attrs[key])):
                problems.append(f"{a.name}: attribute {key} differs")
        for key in fa:
            x, y = fa[key][()], fb[key][()]
            if x.shape != y.shape or x.dtype != y.dtype:
                problems.append(f"{a.name}:{key}: shape/dtype {x.shape}/{x.dtype} vs {y.shape}/{y.dtype}")
            elif np.issubdtype(x.dtype, np.floating):
                # CPU float results may differ in the last bits with a different thread count
                if not np.allclose(x, y, rtol=1e-5, atol=1e-6):
                    problems.append(f"{a.name}:{key}: values differ (max {np.max(np.abs(x - y))})")
            elif not np.array_equal(x, y):
                problems.append(f"{a.name}:{key}: values differ")
    return problems


def _compare_trees(local: Path, remote: Path) -> list[str]:
    a = {p.relative_to(local) for p in local.rglob("*") if p.is_file()}
    b = {p.relative_to(remote) for p in remote.rglob("*") if p.is_file()}
    problems = [f"only in the local run: {p}" for p in sorted(a - b)]
    problems += [f"only in the SLURM run: {p}" for p in sorted(b - a)]
    for rel in sorted(a & b):
        if rel.suffix == ".h5":
            problems += _same_h5(local / rel, remote / rel)
        elif (local / rel).read_bytes() != (remote / rel).read_bytes():
            problems.append(f"differs: {rel}")
    return problems


def test_slurm_profile_runs_the_pipeline_like_a_local_run(slurm, tmp_path):
    target, expected_rules = _pipeline_target()
    local, remote = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, remote):
        workdir.mkdir()
        (workdir / "small.yaml").write_text(SMALL_DEMO)

    def config(workdir: Path) -> list[str]:
        # --configfile paths are resolved before --directory applies, hence absolute
        return ["--configfile", str(REPO / "config" / "config.yaml"), str(workdir / "small.yaml")]

    local_s = _snakemake(
        [target, "--profile", "profiles/local", "--directory", str(local), *config(local)],
        _env(),
        tmp_path / "local.log",
    )
    slurm_s = _snakemake(
        [target, *SLURM_ARGS, "--directory", str(remote), *config(remote)],
        _slurm_env(),
        tmp_path / "slurm.log",
    )
    sys.stderr.write(f"\n[slurm] pipeline to {target}: local {local_s:.1f} s, SLURM {slurm_s:.1f} s\n")
    log_text = (tmp_path / "slurm.log").read_text()

    jobs = submitted_jobs(log_text)
    assert sorted(jobs) == sorted(expected_rules), log_text[-3000:]
    for rule, ids in jobs.items():
        record = job_record(ids[0])
        assert record["JobState"] == "COMPLETED", (rule, record)
        gpu = rule == "extract_tma"
        assert record["Partition"] == (cluster.GPU_PARTITION if gpu else cluster.PARTITION), (rule, record)
        assert ("gpu:1" in record.get("TresPerJob", "")) == gpu, (rule, record)

    assert (remote / target).is_file()
    problems = _compare_trees(local / "results", remote / "results")
    problems += _compare_trees(local / "resources", remote / "resources")
    assert not problems, "SLURM and local outputs differ:\n" + "\n".join(problems[:40])
