"""Regions that are Slurm clusters: the pure build/parse functions on output captured from
Slurm 22.05, the config, and end to end against a real single-node Slurm that this test
session starts (tests/slurm_cluster.py) with the real daemon process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.config import load_config
from scheduler.errors import ConfigError
from scheduler.executors import slurm
from scheduler.executors.launcher import Identity
from scheduler.models import Job, JobState
from tests import slurm_cluster
from tests.conftest import Workspace, create_workspace, write_csv
from tests.daemon_process import DaemonProcess, reap_daemons, wait_for
from tests.test_shared_machine import User, as_user, shared_root, users

# Fixtures used here by name: the daemons a failed test left are killed (autouse); real
# Unix users in a directory they can reach.
__all__ = ["reap_daemons", "shared_root", "users"]

WAIT_S = 60.0

# Captured from Slurm 22.05.8 (Debian 12): `scontrol show job -o 1` while held by --begin,
# and after its script exited with status 3.
SCONTROL_PENDING = (
    "JobId=1 JobName=gridshift-7 UserId=root(0) GroupId=root(0) MCS_label=N/A "
    "Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=BeginTime "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 "
    "RunTime=00:00:00 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-11-30T22:40:15 "
    "EligibleTime=2026-11-30T22:40:20 AccrueTime=Unknown StartTime=2026-11-30T22:40:20 "
    "EndTime=2026-11-30T22:41:20 Deadline=N/A SuspendTime=None SecsPreSuspend=0 "
    "LastSchedEval=2026-11-30T22:40:15 Scheduler=Main Partition=debug "
    "AllocNode:Sid=localhost:1173 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 "
    "NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 "
    "Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 "
    "MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 "
    "Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp Comment=gridshift job 7  "
    "StdErr=/tmp/slurmtry-dr1c3z2w/out.log StdIn=/dev/null "
    "StdOut=/tmp/slurmtry-dr1c3z2w/out.log Power= \n"
)
SCONTROL_FAILED = (
    SCONTROL_PENDING.replace("JobState=PENDING Reason=BeginTime",
                             "JobState=FAILED Reason=NonZeroExitCode")
    .replace("ExitCode=0:0", "ExitCode=3:0")
    .replace("EndTime=2026-11-30T22:41:20", "EndTime=2026-11-30T22:40:27")
)


# Build and parse ------------------------------------------------------------------------------

def test_a_held_job_parses_as_not_started_and_an_ended_one_with_its_exit_status() -> None:
    pending = slurm.parse_scontrol_job(SCONTROL_PENDING)
    assert pending is not None
    assert (pending.slurm_id, pending.state, pending.reason) == ("1", "PENDING", "BeginTime")
    assert not pending.started and not pending.ended
    assert pending.started_at is None and pending.exit_code is None  # a forecast, not a fact

    failed = slurm.parse_scontrol_job(SCONTROL_FAILED)
    assert failed is not None and failed.ended
    assert failed.exit_code == 3
    assert failed.started_at == datetime(2026, 11, 30, 22, 40, 20, tzinfo=UTC)
    assert failed.ended_at == datetime(2026, 11, 30, 22, 40, 27, tzinfo=UTC)
    assert slurm.end_state(failed, cancel_requested=False) == (JobState.FAILED,
                                                               "exit status 3")

    signalled = slurm.parse_scontrol_job(SCONTROL_FAILED.replace("ExitCode=3:0", "ExitCode=0:9"))
    assert signalled is not None and signalled.exit_code == -9
    assert slurm.parse_scontrol_job("") is None


def test_sacct_gives_the_jobs_energy_or_its_steps_sum() -> None:
    # `sacct -n -P --format=JobIDRaw,State,ExitCode,Start,End,ConsumedEnergyRaw -j 42`
    # on a cluster whose acct_gather_energy plugin reports only per step.
    text = ("42|CANCELLED by 1000|0:15|2026-11-30T10:00:00|2026-11-30T10:20:00|\n"
            "42.batch|CANCELLED|0:15|2026-11-30T10:00:00|2026-11-30T10:20:01|5400\n"
            "42.extern|COMPLETED|0:0|2026-11-30T10:00:00|2026-11-30T10:20:00|1800\n")
    seen = slurm.parse_sacct(text, "42")
    assert seen is not None
    assert (seen.state, seen.exit_code, seen.energy_joules) == ("CANCELLED", -15, 7200.0)
    assert seen.ended_at == datetime(2026, 11, 30, 10, 20, tzinfo=UTC)
    assert slurm.end_state(seen, cancel_requested=True)[0] == JobState.CANCELLED
    state, reason = slurm.end_state(seen, cancel_requested=False)
    assert state == JobState.FAILED and "not through gridshift" in reason
    assert slurm.parse_sacct(text, "41") is None


def test_sbatch_options_carry_the_plan_the_margin_and_the_owner(tmp_path: Path) -> None:
    config = load_config(str(_config_file(tmp_path, 'partition = "gpu"\n'
                                          'sbatch_args = ["--gres=gpu:1", "--account=ml"]\n'
                                          'time_margin = "50%"\n')), {})
    job = Job(id=7, duration_s=600, cwd="/home/alice/run",
              deadline=datetime(2026, 12, 1, 6, tzinfo=UTC),
              submitted_at=datetime(2026, 11, 30, 22, tzinfo=UTC))
    options = slurm.sbatch_argv(job, config.regions["cluster"],
                                datetime(2026, 12, 1, 2, 30, tzinfo=UTC),
                                Path("/var/log/gridshift/alice/job-7.log"),
                                Identity(1000, 1000, (1000,), "alice", "/home/alice"))
    assert options == [
        "--parsable", "--job-name=gridshift-7",
        "--comment=gridshift job 7 submitted 2026-11-30T22:00:00Z",
        "--begin=2026-12-01T02:30:00", "--time=15", "--time-min=10",
        "--deadline=2026-12-01T06:00:00", "--chdir=/home/alice/run",
        "--output=/var/log/gridshift/alice/job-7.log", "--open-mode=append",
        "--partition=gpu", "--uid=1000", "--gid=1000", "--gres=gpu:1", "--account=ml",
    ]
    assert slurm.time_limit_minutes(3600, 10.0) == 66
    assert slurm.batch_script(["echo", "it's $HOME"], 0o027) == (
        "#!/bin/sh\numask 0027\nexec echo 'it'\"'\"'s $HOME'\n")


def _config_file(root: Path, region_keys: str, executor: str = "slurm") -> Path:
    csv_path = write_csv(root / "flat.csv", [(datetime(2026, 1, 1, tzinfo=UTC),
                                              datetime(2027, 1, 1, tzinfo=UTC), 100.0)])
    path = root / "gridshift.toml"
    path.write_text(f'[providers.file]\nkind = "csv"\npath = "{csv_path}"\n\n'
                    f'[regions.cluster]\nprovider = "file"\nzone = "z"\n'
                    f'executor = "{executor}"\n{region_keys}', encoding="utf-8")
    return path


@pytest.mark.parametrize(("executor", "keys", "key", "problem"), [
    ("pbs", "", "executor", "must be one of local, slurm"),
    ("local", 'partition = "gpu"\n', "partition", 'only for executor = "slurm"'),
    ("slurm", 'time_margin = "10"\n', "time_margin", "percentage"),
    ("slurm", 'sbatch_args = ["gres=gpu:1"]\n', "sbatch_args", "list of sbatch options"),
    ("slurm", 'launcher = ["ssh", "box"]\n', "launcher", "Slurm decides"),
])
def test_bad_slurm_region_keys_are_refused_by_name(
    tmp_path: Path, executor: str, keys: str, key: str, problem: str
) -> None:
    path = _config_file(tmp_path, keys, executor)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {})
    assert str(caught.value).startswith(f"{path}: regions.cluster.{key}: ")
    assert problem in str(caught.value)


def test_daemon_exits_2_with_one_line_when_slurms_commands_are_missing(tmp_path: Path) -> None:
    path = _config_file(tmp_path, "")
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "--config", str(path), "daemon"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PATH": str(tmp_path / "empty-bin"),
             "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state"),
             "XDG_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"gridshift: {path}: regions.cluster.executor: Slurm's commands are not on PATH: "
        f"sbatch, scontrol, scancel, squeue")
    assert not (tmp_path / "data").exists()  # nothing written


# End to end against a real Slurm ----------------------------------------------------------------

@pytest.fixture(scope="session")
def cluster() -> Iterator[slurm_cluster.Cluster]:
    reason = slurm_cluster.missing()
    if reason is not None:
        pytest.skip(reason)
    # Under /tmp, not pytest's root-only directory: jobs of other users run from its spool.
    root = Path(tempfile.mkdtemp(prefix="gs-slurm-", dir="/tmp"))
    started = slurm_cluster.start(root)
    yield started
    slurm_cluster.stop(started)
    shutil.rmtree(root, ignore_errors=True)


Forecast = list[tuple[datetime, datetime, float]]
SlurmWorkspace = Callable[..., Workspace]


@pytest.fixture
def slurm_workspace(cluster: slurm_cluster.Cluster, tmp_path: Path) -> SlurmWorkspace:
    """A workspace whose regions are the test Slurm: `cluster` with the forecast given, or
    one region per name in ``regions`` (forecast in NAME.csv), each with ``region_keys``.
    Forecasts are re-read every 2 s, so a test re-plans by rewriting a file."""

    def build(forecast: Forecast | None = None, regions: dict[str, Forecast] | None = None,
              region_keys: str = "", root: Path = tmp_path) -> Workspace:
        root.mkdir(exist_ok=True)
        body = []
        for name, rows in (regions or {"cluster": forecast or []}).items():
            csv_path = write_csv(root / f"{name}.csv", rows)
            body.append(f'[providers.{name}]\nkind = "csv"\npath = "{csv_path}"\n\n'
                        f'[regions.{name}]\nprovider = "{name}"\nzone = "z"\nslots = 4\n'
                        f'executor = "slurm"\nslurm_conf = "{cluster.conf}"\n{region_keys}\n')
        return create_workspace(root, "\n".join(body),
                                daemon='tick = "1s"\nkill_grace = "2s"\nrefresh_every = "2s"')

    return build


def dip(now: datetime, start: datetime, end: datetime) -> list[tuple[datetime, datetime, float]]:
    """A clean window [start, end) between dirty hours."""
    return [(now - timedelta(hours=1), start, 400.0), (start, end, 50.0),
            (end, now + timedelta(hours=3), 400.0)]


def submit(workspace: Workspace, *args: str) -> int:
    result = workspace.cli("submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    job_id: int = result.json()["id"]
    return job_id


def show(workspace: Workspace, job_id: int) -> dict[str, object]:
    result = workspace.cli("show", "--json", str(job_id))
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = result.json()
    return document


def queued_in_slurm(cluster: slurm_cluster.Cluster) -> dict[str, tuple[str, str, str, str]]:
    """squeue's pending and running jobs: id -> (state, reason, start time, name)."""
    listed = cluster.run("squeue", "-h", "-O", "JobID:|,State:|,Reason:|,StartTime:|,Name:")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("|") for line in listed.stdout.splitlines()]
    return {row[0].strip(): (row[1].strip(), row[2].strip(), row[3].strip(), row[4].strip())
            for row in rows}


def slurm_jobs_of(cluster: slurm_cluster.Cluster, workspace: Workspace, job_id: int
                  ) -> list[str]:
    """Every Slurm job, in any state, submitted for this job of this workspace (gridshift
    ids restart in each workspace: the comment, with the submission time, tells apart)."""
    named = cluster.run("squeue", "-h", "-t", "all", f"--name=gridshift-{job_id}", "-O",
                        "JobID:|,Comment:")
    submitted_at = str(show(workspace, job_id)["submitted_at"])[:19]
    comment = f"gridshift job {job_id} submitted {submitted_at}Z"
    return [line.split("|")[0].strip() for line in named.stdout.splitlines()
            if line.split("|")[1].strip() == comment]


def slurm_id_of(workspace: Workspace, job_id: int) -> str:
    def submitted() -> str | None:
        return str(show(workspace, job_id).get("slurm_job_id") or "") or None

    return wait_for(submitted, WAIT_S, 0.2, f"job {job_id} to be submitted to Slurm")


def wait_job(workspace: Workspace, job_id: int, *states: JobState) -> dict[str, object]:
    def reached() -> dict[str, object] | None:
        document = show(workspace, job_id)
        return document if document["state"] in states else None

    return wait_for(reached, WAIT_S, 0.2, f"job {job_id} to be {'/'.join(states)}")


@pytest.mark.slow
def test_jobs_wait_in_squeue_until_their_window_run_there_and_report_their_exit_codes(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    window_start = now + timedelta(seconds=25)
    workspace = slurm_workspace(dip(now, window_start, now + timedelta(minutes=10)))
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    succeeds = submit(workspace, "--duration", "1m", "--within", "1h", "--env", "GREETING=hi",
                      "--", "sh", "-c", 'echo "$GREETING from $GRIDSHIFT_JOB_ID" > ok.txt')
    fails = submit(workspace, "--duration", "1m", "--within", "1h", "--",
                   "sh", "-c", "pwd > failed.txt; exit 3")
    assert datetime.now(UTC) < window_start - timedelta(seconds=3), "too slow for this test"

    held = {job_id: slurm_id_of(workspace, job_id) for job_id in (succeeds, fails)}
    queue = queued_in_slurm(cluster)
    for job_id, slurm_id in held.items():
        assert queue[slurm_id] == ("PENDING", "BeginTime", slurm.slurm_time(window_start),
                                   f"gridshift-{job_id}")
        assert show(workspace, job_id)["state"] == JobState.PLANNED

    ok = wait_job(workspace, succeeds, JobState.SUCCEEDED, JobState.FAILED)
    failed = wait_job(workspace, fails, JobState.SUCCEEDED, JobState.FAILED)
    assert (ok["state"], ok["exit_code"], ok["run_region"]) == ("succeeded", 0, "cluster")
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    assert (tmp_path / "ok.txt").read_text(encoding="utf-8") == f"hi from {succeeds}\n"
    assert (tmp_path / "failed.txt").read_text(encoding="utf-8") == f"{tmp_path}\n"
    for document in (ok, failed):
        started = datetime.fromisoformat(str(document["started_at"]))
        assert started >= window_start
        assert document["energy_method"] == "declared"  # this cluster gathers no energy
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_replan_moves_the_begin_time_and_cancel_removes_the_job_from_squeue(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    first_window = now + timedelta(minutes=30)
    workspace = slurm_workspace(dip(now, first_window, first_window + timedelta(minutes=30)))
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    job_id = submit(workspace, "--duration", "10m", "--within", "2h", "--", "true")
    slurm_id = slurm_id_of(workspace, job_id)
    assert queued_in_slurm(cluster)[slurm_id][2] == slurm.slurm_time(first_window)

    later_window = now + timedelta(minutes=70)
    write_csv(tmp_path / "cluster.csv",
              dip(now, later_window, later_window + timedelta(minutes=30)))
    # Slurm shows reason None until its next scheduling pass looks at the job again.
    wait_for(lambda: queued_in_slurm(cluster)[slurm_id][:3] == (
        "PENDING", "BeginTime", slurm.slurm_time(later_window)),
             WAIT_S, 0.2, "Slurm's begin time to follow the new plan")
    assert show(workspace, job_id)["slurm_job_id"] == slurm_id  # moved, not submitted again

    cancelled = workspace.cli("cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    wait_for(lambda: slurm_id not in queued_in_slurm(cluster), WAIT_S, 0.2,
             "the Slurm job to leave squeue")
    assert show(workspace, job_id)["state"] == JobState.CANCELLED
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_restarted_daemon_keeps_following_a_running_slurm_job(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    workspace = slurm_workspace(dip(now, now - timedelta(minutes=5), now + timedelta(hours=1)))
    first = DaemonProcess(workspace)
    first.wait_started()
    release = tmp_path / "release"
    job_id = submit(workspace, "--duration", "5m", "--within", "2h", "--", "sh", "-c",
                    f'while [ ! -e "{release}" ]; do sleep 0.2; done; echo done')
    running = wait_job(workspace, job_id, JobState.RUNNING)
    slurm_id = str(running["slurm_job_id"])
    assert queued_in_slurm(cluster)[slurm_id][0] == "RUNNING"
    first.kill()  # no clean-up at all

    second = DaemonProcess(workspace)
    second.wait_started()
    release.touch()
    done = wait_job(workspace, job_id, JobState.SUCCEEDED, JobState.FAILED, JobState.LOST)
    assert (done["state"], done["exit_code"], done["slurm_job_id"]) == ("succeeded", 0,
                                                                        slurm_id)
    log_path = Path(str(done["log_path"]))
    assert log_path.read_text(encoding="utf-8") == "done\n"
    assert slurm_jobs_of(cluster, workspace, job_id) == [slurm_id]  # submitted once
    assert second.stop() == 0


@pytest.mark.slow
def test_a_move_to_another_region_cancels_the_slurm_job_and_submits_it_there(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    window = now + timedelta(minutes=30)
    dirty: Forecast = [(now - timedelta(hours=1), now + timedelta(hours=3), 400.0)]
    workspace = slurm_workspace(regions={
        "north": dip(now, window, window + timedelta(minutes=30)), "south": dirty})
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    job_id = submit(workspace, "--duration", "10m", "--within", "2h", "--region", "north",
                    "--region", "south", "--", "true")
    first = slurm_id_of(workspace, job_id)
    assert show(workspace, job_id)["planned_region"] == "north"

    cleaner = now + timedelta(minutes=50)
    write_csv(tmp_path / "south.csv", [(now - timedelta(hours=1), cleaner, 400.0),
                                        (cleaner, cleaner + timedelta(minutes=30), 10.0),
                                        (cleaner + timedelta(minutes=30),
                                         now + timedelta(hours=3), 400.0)])
    second = wait_for(lambda: (str(show(workspace, job_id).get("slurm_job_id"))
                               not in ("None", first)
                               and str(show(workspace, job_id)["slurm_job_id"])),
                      WAIT_S, 0.2, "the job to be submitted in the new region")
    queue = queued_in_slurm(cluster)
    assert first not in queue
    assert queue[second][0] == "PENDING" and queue[second][2] == slurm.slurm_time(cleaner)
    assert show(workspace, job_id)["planned_region"] == "south"
    assert workspace.cli("cancel", str(job_id)).returncode == 0
    wait_for(lambda: second not in queued_in_slurm(cluster), WAIT_S, 0.2,
             "the Slurm job to leave squeue")
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_failing_sbatch_is_retried_and_fails_the_job_only_at_its_latest_start(
    slurm_workspace: SlurmWorkspace
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    workspace = slurm_workspace(dip(now, now - timedelta(minutes=5), now + timedelta(hours=1)),
                                region_keys='partition = "nosuch"\n')
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    job_id = submit(workspace, "--duration", "1m", "--within", "80s", "--", "true")
    wait_for(lambda: daemon.output().count(f"job {job_id}: could not submit to Slurm") >= 2,
             WAIT_S, 0.2, "sbatch to be tried twice")
    retrying = show(workspace, job_id)
    if datetime.fromisoformat(str(retrying["deadline"])) - timedelta(minutes=1) > datetime.now(
            UTC) + timedelta(seconds=1):
        assert retrying["state"] == JobState.PLANNED  # its latest start has not come yet
    assert "invalid partition specified: nosuch" in daemon.output()

    failed = wait_job(workspace, job_id, JobState.FAILED, JobState.SUCCEEDED)
    assert failed["state"] == JobState.FAILED
    assert str(failed["end_reason"]).startswith("could not submit to Slurm: sbatch:")
    assert "invalid partition specified: nosuch" in str(failed["end_reason"])
    assert failed["slurm_job_id"] is None
    assert daemon.stop() == 0


@pytest.mark.slow
def test_cancelling_a_running_slurm_job_scancels_it(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    workspace = slurm_workspace(dip(now, now - timedelta(minutes=5), now + timedelta(hours=1)))
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    job_id = submit(workspace, "--duration", "5m", "--within", "2h", "--",
                    "sh", "-c", f'while [ ! -e "{tmp_path / "never"}" ]; do sleep 0.2; done')
    slurm_id = str(wait_job(workspace, job_id, JobState.RUNNING)["slurm_job_id"])
    cancelled = workspace.cli("cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"Slurm job {slurm_id}" in cancelled.stdout + cancelled.stderr
    done = wait_job(workspace, job_id, JobState.CANCELLED, JobState.FAILED, JobState.LOST)
    assert done["state"] == JobState.CANCELLED
    assert slurm_id not in queued_in_slurm(cluster)
    assert daemon.stop() == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("runuser") is None,
                    reason="useradd and runuser are needed to act as another user")
def test_a_root_daemon_submits_a_users_job_to_slurm_as_that_user(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster, shared_root: Path,
    users: dict[str, User]
) -> None:
    alice = users["alice"]
    now = datetime.now(UTC).replace(microsecond=0)
    window_start = now + timedelta(seconds=30)
    workspace = slurm_workspace(dip(now, window_start, now + timedelta(hours=1)),
                                root=shared_root / "ws")
    workspace.config_path.chmod(0o644)  # no secrets in it; every user reads the socket path
    workspace.config().daemon.socket_path().parent.chmod(0o755)
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    script = 'id -u > facts; echo "$ALICE_ONLY" >> facts; pwd >> facts; umask >> facts; echo out'
    submitted = as_user(alice, workspace, "submit", "--json", "--duration", "1m", "--within",
                        "1h", "--", "sh", "-c", script, env={"ALICE_ONLY": "hers"})
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    slurm_id = slurm_id_of(workspace, job_id)
    assert datetime.now(UTC) < window_start - timedelta(seconds=3), "too slow for this test"
    owner = cluster.run("squeue", "-h", "-j", slurm_id, "-O", "UserName:|,Reason:")
    assert owner.stdout.strip().split("|")[:2] == [alice.name, "BeginTime"]  # whose it is

    done = wait_job(workspace, job_id, JobState.SUCCEEDED, JobState.FAILED)
    assert done["state"] == JobState.SUCCEEDED, done["end_reason"]
    facts = (alice.work / "facts").read_text(encoding="utf-8").splitlines()
    assert facts[:3] == [str(alice.uid), "hers", str(alice.work)]
    assert facts[3].endswith("22") or facts[3].endswith("02")  # alice's umask, not root's
    assert (alice.work / "facts").stat().st_uid == alice.uid
    log_path = Path(str(done["log_path"]))
    assert log_path.parent.name == alice.name and log_path.stat().st_uid == alice.uid
    assert log_path.read_text(encoding="utf-8") == "out\n"
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_daemon_stopped_before_storing_the_slurm_id_finds_the_job_instead_of_resubmitting(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    window = now + timedelta(minutes=30)
    workspace = slurm_workspace(dip(now, window, window + timedelta(minutes=30)))
    first = DaemonProcess(workspace)
    first.wait_started()
    job_id = submit(workspace, "--duration", "10m", "--within", "2h", "--", "true")
    slurm_id = slurm_id_of(workspace, job_id)
    assert first.stop() == 0
    # What a crash between sbatch and storing its answer leaves: the region, no id.
    store = workspace.store()
    try:
        store.update_job_fields(job_id, slurm_job_id=None)
    finally:
        store.close()

    second = DaemonProcess(workspace)
    second.wait_started()
    wait_for(lambda: show(workspace, job_id)["slurm_job_id"] == slurm_id, WAIT_S, 0.2,
             "the daemon to find the Slurm job")
    assert f"job {job_id}: found its Slurm job {slurm_id}" in second.output()
    assert slurm_jobs_of(cluster, workspace, job_id) == [slurm_id]  # not submitted again
    assert workspace.cli("cancel", str(job_id)).returncode == 0
    assert second.stop() == 0


@pytest.mark.slow
def test_a_held_job_an_admin_scancels_fails_and_is_not_submitted_again(
    slurm_workspace: SlurmWorkspace, cluster: slurm_cluster.Cluster
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    window = now + timedelta(minutes=30)
    workspace = slurm_workspace(dip(now, window, window + timedelta(minutes=30)))
    daemon = DaemonProcess(workspace)
    daemon.wait_started()
    job_id = submit(workspace, "--duration", "10m", "--within", "2h", "--", "true")
    slurm_id = slurm_id_of(workspace, job_id)
    assert cluster.run("scancel", slurm_id).returncode == 0

    failed = wait_job(workspace, job_id, JobState.FAILED, JobState.CANCELLED)
    assert failed["state"] == JobState.FAILED
    assert failed["end_reason"] == (f"Slurm job {slurm_id} CANCELLED: cancelled in Slurm, "
                                    f"not through gridshift")
    assert failed["exit_code"] is None
    assert slurm_jobs_of(cluster, workspace, job_id) == [slurm_id]
    assert daemon.stop() == 0
