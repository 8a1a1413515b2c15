"""A real single-node Slurm cluster in a temporary directory, for tests.

munged with its own key, socket, pid and log files; a generated slurm.conf (no slurmdbd,
jobcomp/filetxt); slurmctld and slurmd started with ``-f`` that file. Clients find it
through ``SLURM_CONF`` in ``Cluster.env``. Needs root (slurmd runs jobs as their users)
and Debian's munge, slurmctld, slurmd and slurm-client packages.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# What a test session needs on PATH (or in /usr/sbin) to start the cluster.
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Cluster:
    root: Path
    conf: Path
    env: dict[str, str]  # the environment Slurm's clients need to reach this cluster
    processes: tuple[subprocess.Popen[bytes], ...]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env,
                              timeout=30, check=False)


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (slurmd runs jobs as their users)"
    absent = [name for name in (*DAEMONS, *CLIENTS) if _find(name) is None]
    if absent:
        return (f"Slurm or munge is not installed ({', '.join(absent)} not found): install "
                f"the Debian packages munge, slurmctld, slurmd and slurm-client")
    return None


def _slurm_conf(root: Path, munge_socket: Path, host: str, cpus: int) -> str:
    return "\n".join([
        "ClusterName=gridshift-test",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        # Ports of their own, so a system Slurm on this machine is left alone.
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'jobcomp.txt'}",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "MinJobAge=600",
        f"NodeName={host} CPUs={cpus} RealMemory=256 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(root: Path) -> Cluster:
    """Start munged, slurmctld and slurmd under ``root``; wait until the node is idle."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # slurmd, as a job's user, reaches files under it
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, munge_socket, host, os.cpu_count() or 1),
                    encoding="utf-8")
    # cgroup.conf is read even with no cgroup plugin in use; an empty one is enough.
    (root / "cgroup.conf").write_text("", encoding="utf-8")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_spawn(root / "munged.out", [
            str(_find("munged")), "--foreground", "--force", f"--key-file={key}",
            f"--socket={munge_socket}", f"--pid-file={root / 'munge' / 'munged.pid'}",
            f"--log-file={root / 'munge' / 'munged.log'}", f"--seed-file={root / 'munge' / 'seed'}",
        ], env))
        _wait(lambda: munge_socket.exists(), "munged's socket", processes)
        processes.append(_spawn(root / "slurmctld.out",
                                [str(_find("slurmctld")), "-D", "-i", "-f", str(conf)], env))
        processes.append(_spawn(root / "slurmd.out",
                                [str(_find("slurmd")), "-D", "-f", str(conf)], env))
        cluster = Cluster(root, conf, env, tuple(processes))

        def node_idle() -> bool:
            shown = cluster.run("sinfo", "-h", "-N", "-o", "%T")
            return shown.returncode == 0 and shown.stdout.strip() == "idle"

        _wait(node_idle, "the node to be idle", processes)
        return cluster
    except BaseException:
        _stop(processes)
        raise


def stop(cluster: Cluster) -> None:
    _stop(list(cluster.processes))


def _spawn(output: Path, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(output, "wb") as handle:
        return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait(check: object, what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    assert callable(check)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        exited = [p.args for p in processes if p.poll() is not None]
        if exited:
            raise RuntimeError(f"test Slurm cluster: {exited[0]} exited while waiting for "
                               f"{what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"test Slurm cluster: timed out waiting for {what}")
        time.sleep(0.1)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
