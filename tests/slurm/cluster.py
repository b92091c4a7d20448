"""A throw-away one-node SLURM on localhost for tests/test_slurm.py.

Installs Debian's slurm-wlm and munge when missing, writes /etc/slurm/slurm.conf and gres.conf (the
executor plugin strips SLURM_CONF before its inner srun, so the default path is the only one that
works), starts munged, slurmctld and slurmd in the foreground as child processes (so their PIDs are
known), waits until the node is idle, and stops exactly those PIDs again. A conf file that was there
before is backed up and restored. Every wait is bounded.

Settings that matter (facts from running it, see issue 8): ProctrackType=proctrack/linuxproc and
TaskPlugin=task/none (no cgroups in containers); a GPU gres `Name=gpu File=/dev/null` so `--gpus=1`
schedules on a machine without a GPU; no accounting daemon (the profile must query job status with
squeue); MinJobAge=300 so squeue still lists finished jobs when the plugin asks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "# written by HAF-flow tests/slurm/cluster.py"
CONF_DIR = Path("/etc/slurm")
PARTITION = "haf"
GPU_PARTITION = "hafgpu"


class Unavailable(RuntimeError):
    """SLURM cannot be started here; the message is the skip reason."""


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def ensure_installed(timeout: float = 600) -> float:
    """Install slurm-wlm and munge with apt when a binary is missing; returns the seconds it took."""
    needed = ["slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo", "srun"]
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in needed):
        return 0.0
    if os.geteuid() != 0:
        raise Unavailable("SLURM is not installed and installing it needs root")
    if shutil.which("apt-get") is None:
        raise Unavailable("SLURM is not installed and apt-get is not available")
    start = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        upd = _run(["apt-get", "update", "-q"], timeout=timeout / 2, env=env)
        if upd.returncode != 0:
            raise Unavailable(f"apt-get update failed: {upd.stderr.strip()[-300:]}")
        inst = _run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"],
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"apt-get did not finish in {exc.timeout:.0f} s") from exc
    if inst.returncode != 0:
        raise Unavailable(f"apt-get install slurm-wlm munge failed: {inst.stderr.strip()[-300:]}")
    return time.monotonic() - start


def _mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise Unavailable("cannot read MemAvailable from /proc/meminfo")


def _running(name: str) -> list[int]:
    """PIDs of processes whose executable name is exactly `name` (read-only check, nothing is killed)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class Cluster:
    """One node, two partitions (CPU and GPU) on localhost; `start()` / `stop()` own the daemons."""

    workdir: Path
    cpus: int = 8
    mem_mb: int = 32000
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _backups: dict[Path, Path | None] = field(default_factory=dict)

    # ---- configuration -------------------------------------------------------------------------
    def slurm_conf(self) -> str:
        state = self.workdir / "state"
        spool = self.workdir / "spool"
        return f"""{MARKER}
ClusterName=hafci
SlurmctldHost={self.hostname}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={self.workdir}/slurmctld.pid
SlurmdPidFile={self.workdir}/slurmd.pid
SlurmctldLogFile={self.workdir}/slurmctld.log
SlurmdLogFile={self.workdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# the node's CPUs/RealMemory below are taken as configured (jobs here are tiny; rules declare cluster sizes)
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
GresTypes=gpu
NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={self.hostname} Default=NO MaxTime=INFINITE State=UP
"""

    def gres_conf(self) -> str:
        return f"{MARKER}\nNodeName={self.hostname} Name=gpu File=/dev/null\n"

    def _install_conf(self, name: str, text: str) -> None:
        path = CONF_DIR / name
        if path not in self._backups:
            if path.exists() and MARKER not in path.read_text(errors="replace"):
                backup = self.workdir / f"{name}.orig"
                shutil.copy2(path, backup)
                self._backups[path] = backup
            else:
                self._backups[path] = None
        path.write_text(text)

    # ---- daemons -------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], **kwargs) -> None:
        log = open(self.workdir / f"{name}.stdout", "w")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )

    def start(self, timeout: float = 90) -> None:
        if os.geteuid() != 0:
            raise Unavailable("starting munged/slurmctld/slurmd needs root")
        for daemon in ("slurmctld", "slurmd"):
            if _running(daemon):
                raise Unavailable(f"a {daemon} is already running here; not touching a real cluster")
        if not Path("/etc/munge/munge.key").exists():
            raise Unavailable("/etc/munge/munge.key is missing (munge package not configured)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool"):
            (self.workdir / sub).mkdir(exist_ok=True)
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        self._install_conf("slurm.conf", self.slurm_conf())
        self._install_conf("gres.conf", self.gres_conf())

        if not Path("/run/munge/munge.socket.2").exists() or not _running("munged"):
            run_dir = Path("/run/munge")
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            self._spawn("munged", ["/usr/sbin/munged", "--foreground"], user="munge", group="munge")
            self._wait(lambda: _run(["munge", "-n"], timeout=5).returncode == 0, 20, "munged to answer")
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"])
        self._wait(lambda: _run(["scontrol", "ping"], timeout=5).stdout.count("UP") >= 1, 30, "slurmctld")
        self._spawn("slurmd", ["/usr/sbin/slurmd", "-D"])
        self._wait(self.node_idle, timeout, "the node to become idle (sinfo)")

    def node_idle(self) -> bool:
        out = _run(["sinfo", "-h", "-N", "-o", "%t"], timeout=10).stdout.split()
        return bool(out) and all(state == "idle" for state in out)

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise Unavailable(
                        f"{name} exited with {proc.returncode} while waiting for {what}: {self.tail()}"
                    )
            try:
                if ok():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)
        raise Unavailable(f"timed out after {timeout:.0f} s waiting for {what}: {self.tail()}")

    def tail(self, n: int = 1500) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.stdout", "slurmctld.stdout", "slurmd.stdout"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons this object started (by PID, newest first) and restore conf files."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.procs.clear()
        for path, backup in self._backups.items():
            if backup is not None:
                shutil.copy2(backup, path)
            elif path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()
        self._backups.clear()


def default_size(max_cpus: int = 8, max_mem_mb: int = 32000) -> tuple[int, int]:
    """CPUs and RealMemory for the node: at least what the biggest rule asks, at least what the host has."""
    return max(os.cpu_count() or 1, max_cpus), max(int(_mem_available_mb() * 0.9), max_mem_mb)
