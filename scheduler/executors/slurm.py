"""Regions that are Slurm clusters: gridshift decides when and where, Slurm runs the job.

A job planned in a region with ``executor = "slurm"`` is submitted to Slurm at once, held
until its planned start (``sbatch --begin``), so it shows in ``squeue`` with reason
BeginTime. While it is held, a re-plan moves its begin time (``scontrol update``) or, for
another region, cancels it there and submits it again. Each tick follows the Slurm job
(``scontrol show job``, then ``sacct`` once the controller forgot it) and records its start
and end through the same state transitions as a local job.

A submission is two-phase, like a local launch: the region is stored before ``sbatch``
runs and the Slurm job id after, so a daemon restarted in between finds the Slurm job by
its name and comment (``squeue``) instead of submitting it twice.

Build and parse are pure functions (tested on output captured from Slurm 22.05); the
commands run with ``TZ=UTC``, so every time Slurm prints or reads is UTC.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.config import Config, RegionConfig
from scheduler.energy import Measurement, declared_energy
from scheduler.errors import ConfigError, StateConflict
from scheduler.executors import launcher
from scheduler.models import FINISHED, Job, JobState
from scheduler.store import Store
from scheduler.units import JOULES_PER_KWH

if TYPE_CHECKING:  # the cancel use case (jobs.py) imports this module; only daemons meter
    from scheduler.metrics import DaemonMetrics

log = logging.getLogger("gridshift.slurm")

# Every command a slurm region needs; sacct is optional (clusters without accounting).
REQUIRED_COMMANDS = ("sbatch", "scontrol", "scancel", "squeue")
COMMAND_TIMEOUT_S = 30.0
METHOD_SLURM = "slurm"

# Slurm job states by what gridshift makes of them; any other state is a started job.
NOT_STARTED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
ENDED_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY",
    "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED",
})
# Why Slurm ended a job, for states whose exit code says nothing.
_END_REASONS = {
    "TIMEOUT": "Slurm stopped it at its time limit",
    "NODE_FAIL": "its Slurm node failed",
    "BOOT_FAIL": "its Slurm node failed to boot",
    "OUT_OF_MEMORY": "Slurm stopped it: out of memory",
    "DEADLINE": "Slurm removed it: it could no longer end before its deadline",
    "PREEMPTED": "Slurm preempted it",
    "REVOKED": "Slurm revoked it (it ran on another cluster of a federation)",
}
# How a job Slurm held ends without gridshift seeing it run (it is not run again).
ENDED_WHILE_HELD = frozenset({"CANCELLED", "DEADLINE"})
_NO_TIME = frozenset({"", "Unknown", "None", "N/A", "NONE", "(null)"})


class SlurmError(Exception):
    """A Slurm command failed; the message is Slurm's own."""


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says about one job."""

    slurm_id: str
    state: str
    reason: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # The command's exit status; minus the signal's number when a signal ended it.
    exit_code: int | None = None
    energy_joules: float | None = None

    @property
    def started(self) -> bool:
        return self.state not in NOT_STARTED_STATES

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


# Building the submission ------------------------------------------------------------------

def job_name(job_id: int) -> str:
    return f"gridshift-{job_id}"


def job_comment(job: Job) -> str:
    """The comment that tells this job's Slurm job apart from another installation's."""
    return f"gridshift job {job.id} submitted {slurm_time(job.submitted_at)}Z"


def slurm_time(moment: datetime) -> str:
    """A time as Slurm's commands read and print it (they run with TZ=UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def time_limit_minutes(duration_s: int, margin_percent: float) -> int:
    """Slurm's time limit (whole minutes): the duration plus the region's margin."""
    # Rounded first: 3600 s plus 10% is 66 minutes, not 66.00000000000001.
    return max(1, math.ceil(round(duration_s * (100 + margin_percent) / 6000, 6)))


def sbatch_argv(job: Job, settings: RegionConfig, begin: datetime, log_path: Path,
                identity: launcher.Identity | None) -> list[str]:
    """sbatch's options for ``job`` held until ``begin`` (``--export-file`` is added where
    the environment is written: SlurmCommands.submit).

    ``--time-min`` is the job's own duration, so Slurm's ``--deadline`` check ("can it
    still end in time?") does not count the margin."""
    limit = time_limit_minutes(job.duration_s, settings.time_margin_percent)
    argv = [
        "--parsable",
        f"--job-name={job_name(job.id)}",
        f"--comment={job_comment(job)}",
        f"--begin={slurm_time(begin)}",
        f"--time={limit}",
        f"--time-min={min(limit, max(1, math.ceil(job.duration_s / 60)))}",
        f"--deadline={slurm_time(job.deadline)}",
        f"--chdir={job.cwd}",
        f"--output={log_path}",
        "--open-mode=append",
    ]
    if settings.partition is not None:
        argv.append(f"--partition={settings.partition}")
    if identity is not None:
        argv += [f"--uid={identity.uid}", f"--gid={identity.gid}"]
    return [*argv, *settings.sbatch_args]


def batch_script(argv: Sequence[str], umask: int | None) -> str:
    """The batch script: the job's argv, exec'd (no shell parsing of its words)."""
    lines = ["#!/bin/sh"]
    if umask is not None:
        lines.append(f"umask {umask:04o}")
    lines.append(f"exec {shlex.join(argv)}")
    return "\n".join(lines) + "\n"


def environment_file(env: Mapping[str, str]) -> bytes:
    """``--export-file``'s format: NAME=value entries separated by NUL bytes."""
    return b"".join(f"{name}={value}".encode() + b"\0" for name, value in env.items())


# Parsing Slurm's answers ------------------------------------------------------------------

def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` ("ID" or "ID;CLUSTER")."""
    first = stdout.strip().split(";", 1)[0]
    if not first.isdigit():
        raise SlurmError(f"sbatch printed no job id: {stdout.strip()!r}")
    return first


def _time(value: str | None) -> datetime | None:
    if value is None or value in _NO_TIME:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        return None


def _exit_code(value: str | None) -> int | None:
    """Slurm's "STATUS:SIGNAL" as one number: the status, or minus the signal."""
    if not value or ":" not in value:
        return None
    status, _, signal_number = value.partition(":")
    if not (status.isdigit() and signal_number.isdigit()):
        return None
    return -int(signal_number) if int(signal_number) else int(status)


def _state(value: str) -> str:
    # sacct writes "CANCELLED by 1000"; squeue and scontrol only the state.
    return value.split()[0] if value.strip() else "UNKNOWN"


def parse_scontrol_job(text: str) -> SlurmJob | None:
    """One job from ``scontrol show job -o ID`` (key=value pairs on one line)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    # Values of the keys read here hold no spaces; others (Comment, Command) may.
    fields = dict(re.findall(r"(?:^|\s)(JobId|JobState|Reason|ExitCode|StartTime|EndTime)"
                             r"=(\S*)", line))
    if "JobId" not in fields or "JobState" not in fields:
        return None
    state = _state(fields["JobState"])
    ended = state in ENDED_STATES
    return SlurmJob(
        slurm_id=fields["JobId"], state=state,
        reason=None if fields.get("Reason") in (None, "None") else fields["Reason"],
        started_at=_time(fields.get("StartTime")) if state not in NOT_STARTED_STATES else None,
        ended_at=_time(fields.get("EndTime")) if ended else None,
        exit_code=_exit_code(fields.get("ExitCode")) if ended else None)


SACCT_FORMAT = "JobIDRaw,State,ExitCode,Start,End,ConsumedEnergyRaw"


def parse_sacct(text: str, slurm_id: str) -> SlurmJob | None:
    """The job's line of ``sacct -n -P --format=SACCT_FORMAT -j ID``; its energy is the
    job's ConsumedEnergyRaw (joules), else the sum over its steps; None when not there."""
    job_fields: list[str] | None = None
    step_joules = 0.0
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        if fields[0] == slurm_id:
            job_fields = fields
        elif fields[0].startswith(f"{slurm_id}.") and fields[5].isdigit():
            step_joules += float(fields[5])
    if job_fields is None:
        return None
    state = _state(job_fields[1])
    joules = float(job_fields[5]) if job_fields[5].isdigit() else step_joules
    return SlurmJob(
        slurm_id=slurm_id, state=state, started_at=_time(job_fields[3]),
        ended_at=_time(job_fields[4]) if state in ENDED_STATES else None,
        exit_code=_exit_code(job_fields[2]) if state in ENDED_STATES else None,
        energy_joules=joules or None)


def energy_of(job: Job, seen: SlurmJob, started_at: datetime | None,
              ended_at: datetime | None) -> Measurement:
    """Slurm's ConsumedEnergyRaw where the cluster gathers it, else declared power."""
    if seen.energy_joules is not None:
        return Measurement(seen.energy_joules / JOULES_PER_KWH, METHOD_SLURM,
                           f"Slurm's ConsumedEnergyRaw for job {seen.slurm_id}: "
                           f"{seen.energy_joules:.0f} J")
    return declared_energy(job.power_watts, started_at, ended_at,
                           f"Slurm reported no energy for job {seen.slurm_id}")


def end_state(seen: SlurmJob, cancel_requested: bool) -> tuple[JobState, str]:
    """gridshift's final state for an ended Slurm job, and the reason recorded."""
    described = f"Slurm job {seen.slurm_id} {seen.state}"
    if seen.state == "CANCELLED":
        if cancel_requested:
            return JobState.CANCELLED, f"cancelled; {described}"
        return JobState.FAILED, f"{described}: cancelled in Slurm, not through gridshift"
    if seen.state == "COMPLETED" and seen.exit_code == 0:
        return JobState.SUCCEEDED, "exit status 0"
    if seen.state in _END_REASONS:
        return JobState.FAILED, f"{_END_REASONS[seen.state]} ({described})"
    if seen.exit_code is not None and seen.exit_code < 0:
        return JobState.FAILED, f"killed by signal {-seen.exit_code} ({described})"
    if seen.exit_code is not None:
        return JobState.FAILED, f"exit status {seen.exit_code}"
    return JobState.FAILED, described


# Running Slurm's commands -------------------------------------------------------------------

def check_commands(config: Config) -> None:
    """ConfigError (exit 2) when a slurm region's commands are not on PATH."""
    for name, region in config.regions.items():
        if region.executor != "slurm":
            continue
        absent = [command for command in REQUIRED_COMMANDS if shutil.which(command) is None]
        if absent:
            raise ConfigError(config.source, f"regions.{name}.executor",
                              f"Slurm's commands are not on PATH: {', '.join(absent)}")


@dataclass(frozen=True)
class SlurmCommands:
    """One cluster's commands, run as the daemon's user with TZ=UTC."""

    slurm_conf: Path | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TZ"] = "UTC"
        if self.slurm_conf is not None:
            env["SLURM_CONF"] = str(self.slurm_conf)
        return env

    def _run(self, argv: Sequence[str], script: str | None = None,
             pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
        path = shutil.which(argv[0])
        if path is None:
            raise SlurmError(f"{argv[0]} is not on PATH")
        try:
            return subprocess.run([path, *argv[1:]], input=script, capture_output=True,
                                  text=True, env=self._env(), timeout=COMMAND_TIMEOUT_S,
                                  pass_fds=tuple(pass_fds), check=False,
                                  stdin=None if script is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:.0f} s"
                             ) from None
        except OSError as error:
            raise SlurmError(f"{argv[0]}: {error.strerror or error}") from None

    def _checked(self, argv: Sequence[str], script: str | None = None,
                 pass_fds: Sequence[int] = ()) -> str:
        done = self._run(argv, script, pass_fds)
        if done.returncode != 0:
            message = " ".join((done.stderr or done.stdout).split()) or (
                f"exit status {done.returncode}")
            raise SlurmError(f"{argv[0]}: {message}")
        return done.stdout

    def submit(self, options: Sequence[str], script: str, env: Mapping[str, str]) -> str:
        """sbatch; the job gets exactly ``env`` through an unlinked file's descriptor
        (``--export-file``), while sbatch itself keeps the daemon's environment."""
        with tempfile.TemporaryFile() as handle:
            handle.write(environment_file(env))
            handle.flush()
            handle.seek(0)
            descriptor = handle.fileno()
            argv = ["sbatch", *options, f"--export-file={descriptor}"]
            return parse_sbatch(self._checked(argv, script, (descriptor,)))

    def move(self, slurm_id: str, begin: datetime) -> None:
        self._checked(["scontrol", "update", f"JobId={slurm_id}",
                       f"StartTime={slurm_time(begin)}"])

    def cancel(self, slurm_id: str) -> None:
        self._checked(["scancel", slurm_id])

    def find(self, name: str, comment: str) -> str | None:
        """The id of a job of that name and comment Slurm still knows, if any."""
        listed = self._checked(["squeue", "-h", "-t", "all", f"--name={name}", "-O",
                                "JobID:|,Comment:"])
        for line in listed.splitlines():
            slurm_id, _, found_comment = line.partition("|")
            if found_comment.strip() == comment:
                return slurm_id.strip()
        return None

    def query(self, slurm_id: str) -> SlurmJob | None:
        """What Slurm says about the job; None when neither the controller nor
        accounting knows it; SlurmError when the controller cannot be asked."""
        shown = self._run(["scontrol", "show", "job", "-o", slurm_id])
        seen = parse_scontrol_job(shown.stdout) if shown.returncode == 0 else None
        if shown.returncode != 0:
            self._checked(["scontrol", "ping"])  # the controller answers: it forgot the job
        if seen is not None and not seen.ended:
            return seen
        accounted = self.accounting(slurm_id)
        if seen is None:
            return accounted
        if accounted is None:
            return seen
        return SlurmJob(seen.slurm_id, seen.state, seen.reason, seen.started_at,
                        seen.ended_at, seen.exit_code, accounted.energy_joules)

    def accounting(self, slurm_id: str) -> SlurmJob | None:
        """sacct's record of the job; None without accounting (or sacct) or a record."""
        if shutil.which("sacct") is None:
            return None
        done = self._run(["sacct", "-n", "-P", f"--format={SACCT_FORMAT}", "-j", slurm_id])
        return parse_sacct(done.stdout, slurm_id) if done.returncode == 0 else None


def cancel_now(store: Store, config: Config, job: Job, release: bool) -> None:
    """Cancel the job's Slurm job at once, from the cancel request itself (a user with no
    daemon running may do it too); ``release``: gridshift is done with it. A failure is
    logged: the daemon's next tick cancels it (a held job's region stays set until then)."""
    if job.slurm_job_id is None or job.slurm_region is None:
        return  # not submitted yet (or being submitted): the daemon cancels what it finds
    settings = config.regions.get(job.slurm_region)
    try:
        SlurmCommands(None if settings is None else settings.slurm_conf).cancel(
            job.slurm_job_id)
    except SlurmError as error:
        log.warning("job %d: could not cancel Slurm job %s now: %s; the daemon will",
                    job.id, job.slurm_job_id, error)
        return
    if release:
        store.update_job_fields(job.id, slurm_region=None)


# Following the jobs -----------------------------------------------------------------------------

@dataclass
class SlurmExecutor:
    """Submits, moves, cancels and follows the jobs of every slurm region."""

    config: Config
    store: Store
    metrics: DaemonMetrics

    def handles(self, region: str | None) -> bool:
        settings = self.config.regions.get(region or "")
        return settings is not None and settings.executor == "slurm"

    def _commands(self, region: str) -> SlurmCommands:
        settings = self.config.regions.get(region)
        return SlurmCommands(None if settings is None else settings.slurm_conf)

    def sync(self, now: datetime, submit: bool = True) -> None:
        """Follow every Slurm job gridshift holds; then submit the newly planned jobs."""
        for job in self.store.slurm_held_jobs():
            try:
                self._follow(job, now)
            except SlurmError as error:
                log.warning("job %d: Slurm job %s in %s: %s; will try again", job.id,
                            job.slurm_job_id or "(being submitted)", job.slurm_region, error)
        slurm_regions = [region for region in self.config.regions if self.handles(region)]
        if not submit or not slurm_regions:
            return
        for job in self.store.planned_unsubmitted(slurm_regions):
            self._submit(job, now)

    # Submitting --------------------------------------------------------------------------------

    def _submit(self, job: Job, now: datetime) -> None:
        region = job.planned_region
        assert region is not None and job.planned_start is not None
        settings = self.config.regions[region]
        latest_start = job.deadline - timedelta(seconds=job.duration_s)
        try:
            owner = launcher.run_as(job)
            identity = owner.identity
            env = launcher.job_environment(job, region, owner.home, self.config.secrets())
            log_path = launcher.prepare_log_dir(self.config.daemon.log_dir, job.id,
                                                owner.user_dir, identity)
            os.close(launcher.open_log(log_path, identity))
        except (OSError, launcher.LaunchRefused) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            self._fail_unstarted(job, region, now, f"could not submit to Slurm: {detail}")
            return
        # Phase one: where it is being submitted, so that a crash before its id is stored
        # leads the next daemon to look for it (find) instead of submitting it again.
        self.store.update_job_fields(job.id, slurm_region=region, slurm_job_id=None,
                                     slurm_begin=None)
        if self.store.get_job(job.id).state != JobState.PLANNED.value:
            return  # cancelled meanwhile: the next sync lets the region go
        begin = max(job.planned_start, now)
        try:
            slurm_id = self._commands(region).submit(
                sbatch_argv(job, settings, begin, log_path, identity),
                batch_script(job.argv, job.umask), env)
        except SlurmError as error:
            self.store.update_job_fields(job.id, slurm_region=None)
            if now >= latest_start:
                self._fail_unstarted(job, region, now, f"could not submit to Slurm: {error}")
            else:
                log.error("job %d: could not submit to Slurm in %s: %s; will try again",
                          job.id, region, error)
            return
        held = f", held until {slurm_time(job.planned_start)}Z" if job.planned_start > now else ""
        reason = f"submitted to Slurm in {region} as job {slurm_id}{held}"
        try:  # Phase two: its id, and the event saying so.
            self.store.transition(job.id, (JobState.PLANNED,), JobState.PLANNED, now, reason,
                                  slurm_job_id=slurm_id, slurm_begin=job.planned_start,
                                  log_path=str(log_path))
        except StateConflict:
            # Cancelled while sbatch ran: the next sync cancels the Slurm job.
            self.store.update_job_fields(job.id, slurm_job_id=slurm_id)
            return
        log.info("job %d: %s", job.id, reason)

    def _fail_unstarted(self, job: Job, region: str, now: datetime, reason: str) -> None:
        """A job that can no longer start in time fails, through running as a local job
        that could not start does (planned -> running -> failed)."""
        log.error("job %d: %s", job.id, reason)
        try:
            self.store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, now,
                                  f"ends in {region} without starting", run_region=region,
                                  started_at=now)
            self.store.transition(job.id, (JobState.RUNNING,), JobState.FAILED, now, reason,
                                  ended_at=now, exit_code=None, end_reason=reason,
                                  slurm_region=None)
        except StateConflict:
            return
        self.metrics.record_finished(region, JobState.FAILED, now > job.deadline, None, None)

    # Following ---------------------------------------------------------------------------------

    def _follow(self, job: Job, now: datetime) -> None:
        region = job.slurm_region
        assert region is not None
        commands = self._commands(region)
        if job.slurm_job_id is None:
            found = commands.find(job_name(job.id), job_comment(job))
            if found is None:  # sbatch never took it: submit it again if still planned
                self.store.update_job_fields(job.id, slurm_region=None)
                return
            log.info("job %d: found its Slurm job %s, submitted before a restart", job.id,
                     found)
            self.store.update_job_fields(job.id, slurm_job_id=found)
            job = self.store.get_job(job.id)
        slurm_id = job.slurm_job_id
        assert slurm_id is not None
        state = JobState(job.state)
        if state in FINISHED:  # cancelled before it started, in gridshift
            commands.cancel(slurm_id)
            self.store.update_job_fields(job.id, slurm_region=None)
            log.info("job %d: cancelled its Slurm job %s", job.id, slurm_id)
            return
        seen = commands.query(slurm_id)
        if state == JobState.PLANNED:
            if seen is None:
                log.warning("job %d: Slurm no longer knows job %s, which never started; "
                            "submitting it again", job.id, slurm_id)
                self.store.update_job_fields(job.id, slurm_region=None)
                return
            if not seen.started:
                self._keep_plan(job, region, slurm_id, commands, now)
                return
            if seen.state in ENDED_WHILE_HELD:  # an admin's scancel, or Slurm's deadline
                self._fail_unstarted(job, region, now, end_state(seen, False)[1])
                return
            job = self._record_start(job, region, seen, now)
            if job.state != JobState.RUNNING.value:
                return
        if seen is None:
            self._record_end(job, region, SlurmJob(slurm_id, "UNKNOWN"), now, lost=True)
        elif seen.ended:
            self._record_end(job, region, seen, now)
        elif job.cancel_requested_at is not None:
            commands.cancel(slurm_id)  # Slurm signals it, then kills it after its KillWait

    def _keep_plan(self, job: Job, region: str, slurm_id: str, commands: SlurmCommands,
                   now: datetime) -> None:
        """While Slurm holds the job, follow the plan: a new region submits it again, a
        new start moves its begin time. Once its begin time passed, Slurm decides."""
        if job.slurm_begin is None or job.slurm_begin <= now or job.planned_start is None:
            return
        if job.planned_region != region:
            commands.cancel(slurm_id)
            self.store.update_job_fields(job.id, slurm_region=None)
            log.info("job %d: re-planned from %s to %s: cancelled Slurm job %s there",
                     job.id, region, job.planned_region, slurm_id)
            return
        if job.planned_start == job.slurm_begin:
            return
        begin = max(job.planned_start, now)
        commands.move(slurm_id, begin)
        self.store.update_job_fields(job.id, slurm_begin=job.planned_start)
        log.info("job %d: moved Slurm job %s to begin at %sZ", job.id, slurm_id,
                 slurm_time(begin))

    def _record_start(self, job: Job, region: str, seen: SlurmJob, now: datetime) -> Job:
        started_at = seen.started_at or now
        latest_start = job.deadline - timedelta(seconds=job.duration_s)
        late = started_at > latest_start
        reason = f"started by Slurm in {region} as job {seen.slurm_id}" + (
            " after its latest start: will miss its deadline" if late else "")
        try:
            self.store.transition(job.id, (JobState.PLANNED,), JobState.RUNNING, now, reason,
                                  run_region=region, started_at=started_at,
                                  deadline_missed=late)
        except StateConflict:
            return self.store.get_job(job.id)
        self.metrics.record_launch(job, started_at)
        log.info("job %d: %s: %s", job.id, reason, " ".join(job.argv))
        return self.store.get_job(job.id)

    def _record_end(self, job: Job, region: str, seen: SlurmJob, now: datetime,
                    lost: bool = False) -> None:
        cancelled = job.cancel_requested_at is not None
        if lost:
            state = JobState.CANCELLED if cancelled else JobState.LOST
            reason = (f"Slurm no longer knows job {seen.slurm_id} and no accounting records "
                      f"how it ended")
            ended_at = None
        else:
            state, reason = end_state(seen, cancelled)
            ended_at = seen.ended_at or now
        if cancelled and state != JobState.CANCELLED:
            reason += " (it ended before the cancel reached it)"
        energy = energy_of(job, seen, job.started_at, ended_at)
        missed = job.deadline_missed or (ended_at is not None and ended_at > job.deadline)
        try:
            self.store.transition(job.id, (JobState.RUNNING,), state, now, reason,
                                  ended_at=ended_at, exit_code=seen.exit_code,
                                  deadline_missed=missed, end_reason=reason,
                                  energy_kwh=energy.energy_kwh, energy_method=energy.method,
                                  energy_note=energy.note, slurm_region=None)
        except StateConflict:
            return
        self.metrics.record_finished(region, state, missed, energy.energy_kwh, energy.method)
        log.info("job %d: %s (%s)", job.id, state.value, reason)
