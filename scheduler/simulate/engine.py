"""The virtual clock: replay jobs under one policy, deciding with the real planner.

Nothing sleeps: the clock jumps from event to event (a submission, a new forecast vintage,
a planned start, a run's end). Every placement comes from the real planners with ``now``
set to the virtual time, the regions' ``slots``, and running jobs holding their slots:
``scheduler.placement.plan`` for whole jobs, ``scheduler.chunking.plan_chunks`` for
interruptible ones, with the same order, tie and missing-data rules as the daemon.

Policies:
- ``now``: start at submission (a nightly job at its usual time) in the job's first region,
  and run to the end: an interruptible job is never paused.
- ``once``: plan each job once, at its submission, from the forecast known then, around the
  slots other jobs already hold; never re-plan (what single-shot tools do).
- ``gridshift``: re-plan every unfinished job at each decision time: a submission, a new
  forecast vintage, and (when slots are limited) a run's end, as the daemon re-plans on
  every change. Whole jobs are re-planned until they start; interruptible jobs until they
  finish (their remaining work, in the region they first ran in; a running one's current
  chunk may be cut or extended).
- ``oracle``: ``gridshift``'s decisions with the actuals as the forecast.

Dispatch follows the daemon: a job starts (or resumes) at its planned start if its region
has a free slot; otherwise it waits for one, and starts over capacity at its latest start
(deadline minus its remaining work) rather than miss its deadline. An interruptible job
runs to the end of its chunk and pauses, freeing its slot, until its next chunk; it does
not pause at the end of its last planned chunk (it runs on until its work is done), nor
where pausing would leave too little time before its deadline. The simulator models no
restart overhead, so ``suspend`` and ``checkpoint`` jobs behave alike. Slots ``None``
means unlimited.

Capacity: at a decision, whole jobs are placed first (around every running run), then
interruptible jobs around them; a greedy order, as in the planners themselves.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.chunking import ChunkJob, plan_chunks
from scheduler.errors import BadInput
from scheduler.placement import Busy, JobRequest, plan
from scheduler.simulate.series import ForecastSource, KnownSeries, Series
from scheduler.simulate.workloads import SimJob

POLICIES = ("now", "once", "gridshift", "oracle")

# Event kinds, in the order they are handled at one instant: a slot frees before anyone
# decides, and decisions come before the starts they schedule (the daemon plans, then
# dispatches).
_END, _DECIDE, _VINTAGE, _START = 0, 1, 2, 3
# Work left below this is done (float noise from summing run lengths).
_DONE_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class Run:
    """One stretch of a job's execution: a whole job runs once, an interruptible job once
    per chunk it ran in (it pauses in between)."""

    job: SimJob
    region: str
    start: float
    end: float


@dataclass
class _Active:
    """A submitted job that has not finished: its plan and its progress."""

    job: SimJob
    region: str = ""  # planned region; once an interruptible job has run, its run region
    start: float = 0.0  # planned start of its next run
    chunks: list[tuple[float, float]] = field(default_factory=list)  # planned, in order
    version: int = 0  # bumped at every new plan, start and pause: older events are stale
    planned: bool = False
    waiting: bool = False  # due, but its region had no free slot
    work_done_s: float = 0.0
    running_since: float | None = None
    run_number: int = 0  # of the run under way, counted over every job: the start order

    @property
    def remaining_s(self) -> float:
        return self.job.duration_s - self.work_done_s

    @property
    def latest_start(self) -> float:
        return self.job.deadline - self.remaining_s

    @property
    def has_run(self) -> bool:
        return self.running_since is not None or self.work_done_s > 0

    def replannable(self, policy: str) -> bool:
        """Whether a re-plan may move it: a whole job until it starts, an interruptible
        one (except under ``now``) until it finishes."""
        if self.job.interruptible and policy != "now":
            return True
        return not self.has_run


@dataclass
class _Engine:
    policy: str
    jobs: Sequence[SimJob]
    source: ForecastSource
    slots: int | None
    progress: Callable[[int], None] | None = None
    events: list[tuple[float, int, int, int]] = field(default_factory=list)
    active: dict[int, _Active] = field(default_factory=dict)
    in_use: dict[str, int] = field(default_factory=dict)
    runs: list[tuple[int, Run]] = field(default_factory=list)  # (run number, run)
    started: int = 0
    by_id: dict[int, SimJob] = field(default_factory=dict)
    decided: int = 0

    def run(self) -> list[Run]:
        self.by_id = {job.job_id: job for job in self.jobs}
        for job in self.jobs:
            self._push(job.submit, _DECIDE, job.job_id, 0)
        if self.policy == "gridshift" and self.jobs:
            first = min(j.submit for j in self.jobs)
            last = max(j.deadline for j in self.jobs)
            for issued in self.source.issue_times():
                if first < issued < last:
                    self._push(float(issued), _VINTAGE, -1, 0)
        while self.events:
            now = self.events[0][0]
            batch = []
            while self.events and self.events[0][0] == now:
                batch.append(heapq.heappop(self.events))
            self._instant(now, batch)
        return [run for _, run in sorted(self.runs, key=lambda numbered: numbered[0])]

    def _push(self, time: float, kind: int, job_id: int, version: int) -> None:
        heapq.heappush(self.events, (time, kind, job_id, version))

    def _current(self, job_id: int, version: int) -> _Active | None:
        entry = self.active.get(job_id)
        return entry if entry is not None and entry.version == version else None

    def _instant(self, now: float, batch: list[tuple[float, int, int, int]]) -> None:
        ended = [e for _, kind, job_id, version in batch
                 if kind == _END and (e := self._current(job_id, version)) is not None]
        for entry in ended:
            self._stop(entry, now)
        submitted = [self.by_id[job_id] for _, kind, job_id, _ in batch if kind == _DECIDE]
        for job in submitted:
            self.active[job.job_id] = _Active(job)
        new_vintage = any(kind == _VINTAGE for _, kind, _, _ in batch)
        replans_all = self.policy in ("gridshift", "oracle")
        if replans_all and (submitted or new_vintage or (ended and self.slots is not None)):
            self._plan([e for e in self.active.values() if e.replannable(self.policy)], now,
                       hold_planned=False)
        elif submitted:
            if self.policy == "now":
                for job in submitted:
                    self._set_start(self.active[job.job_id], job.regions[0],
                                    max(job.baseline_start, now))
            else:
                self._plan([self.active[j.job_id] for j in submitted], now, hold_planned=True)
        if submitted:
            self.decided += len(submitted)
            if self.progress is not None:
                self.progress(self.decided)
        due = [e for _, kind, job_id, version in batch
               if kind == _START and (e := self._current(job_id, version)) is not None]
        if ended:  # a freed slot goes to jobs already waiting for one
            due += [e for e in self.active.values() if e.waiting and e.start <= now]
        for entry in sorted({e.job.job_id: e for e in due}.values(),
                            key=lambda e: (e.start, e.job.job_id)):
            if entry.running_since is None:
                self._try_start(entry, now)

    def _holds(self, now: float, replanned: set[int], hold_planned: bool,
               keep_running: bool) -> list[Busy]:
        """Slots held at a decision: every run under way (except, unless ``keep_running``,
        those being re-planned) and, with ``hold_planned``, the plans of other jobs."""
        busy = []
        for entry in self.active.values():
            mine = entry.job.job_id in replanned
            if entry.running_since is not None:
                if mine and not keep_running:
                    continue
                run_end = self._run_end(entry, now)
                busy.append(Busy(entry.region, now, run_end))
                if hold_planned and not mine:  # and the chunks after its current run
                    busy += [Busy(entry.region, start, end) for start, end in entry.chunks
                             if start >= run_end]
            elif hold_planned and not mine and entry.planned:
                if entry.chunks:
                    busy += [Busy(entry.region, start, end) for start, end in entry.chunks]
                else:
                    busy.append(Busy(entry.region, entry.start, entry.start + entry.remaining_s))
        return busy

    def _plan(self, entries: list[_Active], now: float, hold_planned: bool) -> None:
        """Place ``entries`` with the real planners at ``now``; schedule their starts."""
        if not entries:
            return
        whole = [e for e in entries if not e.job.interruptible]
        chunked = [e for e in entries if e.job.interruptible]
        regions = sorted({r for e in entries for r in e.job.regions})
        until = max(e.job.deadline for e in entries)
        forecasts = {r: self.source.view(r, now, until) for r in regions}
        replanned = {e.job.job_id for e in entries}
        limited = self.slots is not None
        # Unlimited slots: more than could ever be held at once, so holds are moot.
        slots = dict.fromkeys(regions, len(self.jobs) + 1 if self.slots is None else self.slots)
        placed: list[Busy] = []
        if whole:
            busy = self._holds(now, replanned, hold_planned, keep_running=True) if limited else []
            requests = [JobRequest(e.job.job_id, e.job.duration_s, e.job.submit, e.job.deadline,
                                   e.job.regions) for e in whole]
            by_id = {e.job.job_id: e for e in whole}
            for placement in plan(requests, forecasts, slots, now, busy):
                entry = by_id[placement.job_id]
                self._set_start(entry, placement.region, placement.start)
                placed.append(Busy(entry.region, entry.start, entry.start + entry.job.duration_s))
        if chunked:
            busy = (self._holds(now, replanned, hold_planned, keep_running=False) + placed
                    if limited else [])
            by_id = {e.job.job_id: e for e in chunked}
            chunk_jobs = [self._chunk_job(e, now) for e in chunked]
            for chunking in plan_chunks(chunk_jobs, forecasts, slots, now, busy):
                self._set_chunks(by_id[chunking.job_id], chunking.region, chunking.chunks, now)

    def _chunk_job(self, entry: _Active, now: float) -> ChunkJob:
        """Its work left from ``now``: a running job's current run counts as done so far."""
        job = entry.job
        running_s = 0.0 if entry.running_since is None else now - entry.running_since
        return ChunkJob(job.job_id, entry.remaining_s - running_s, job.submit, job.deadline,
                        (entry.region,) if entry.has_run else job.regions, job.min_chunk_s,
                        None, running_since=entry.running_since)

    def _set_start(self, entry: _Active, region: str, start: float) -> None:
        entry.region, entry.start, entry.chunks = region, start, []
        self._schedule(entry)

    def _set_chunks(self, entry: _Active, region: str,
                    chunks: Sequence[tuple[float, float]], now: float) -> None:
        entry.region, entry.chunks = region, list(chunks)
        if entry.running_since is None:
            entry.start = chunks[0][0]
            self._schedule(entry)
        else:  # a running job's first chunk continues its run: its end may move
            entry.version += 1
            self._push(self._run_end(entry, now), _END, entry.job.job_id, entry.version)

    def _schedule(self, entry: _Active) -> None:
        entry.version += 1
        entry.planned, entry.waiting = True, False
        self._push(entry.start, _START, entry.job.job_id, entry.version)

    def _try_start(self, entry: _Active, now: float) -> None:
        ahead = [c for c in entry.chunks if c[1] > now]
        if ahead and ahead[0][0] > now:  # it waited past its chunk: it goes at its next one
            entry.start = min(ahead[0][0], entry.latest_start)
            if entry.start > now:
                self._schedule(entry)
                return
        full = self.slots is not None and self.in_use.get(entry.region, 0) >= self.slots
        if full and now < entry.latest_start:
            if not entry.waiting:  # wait for a slot; at the latest start it goes regardless
                entry.waiting = True
                self._push(entry.latest_start, _START, entry.job.job_id, entry.version)
            return
        entry.waiting = False
        entry.running_since = now
        self.started += 1
        entry.run_number = self.started
        self.in_use[entry.region] = self.in_use.get(entry.region, 0) + 1
        entry.version += 1
        self._push(self._run_end(entry, now), _END, entry.job.job_id, entry.version)

    def _run_end(self, entry: _Active, now: float) -> float:
        """When the run under way ends: the end of its chunk (at once if it runs outside
        every chunk), or when its work is done where no chunk follows or a pause would
        leave too little time before the deadline for the rest."""
        assert entry.running_since is not None
        finish = entry.running_since + entry.remaining_s
        ahead = [c for c in entry.chunks if c[1] > now]
        if ahead and ahead[0][0] > now:
            end, later = now, ahead
        elif ahead:
            end, later = min(ahead[0][1], finish), ahead[1:]
        else:
            return finish
        if not later or end >= finish:
            return finish
        return finish if end >= entry.job.deadline - (finish - end) else end

    def _stop(self, entry: _Active, now: float) -> None:
        """The run under way ends at ``now``: the job finishes or pauses until its next chunk."""
        assert entry.running_since is not None
        if now > entry.running_since:
            self.runs.append((entry.run_number,
                              Run(entry.job, entry.region, entry.running_since, now)))
        entry.work_done_s += now - entry.running_since
        entry.running_since = None
        self.in_use[entry.region] -= 1
        if entry.remaining_s <= _DONE_TOLERANCE_S:
            del self.active[entry.job.job_id]
            return
        entry.chunks = [c for c in entry.chunks if c[0] >= now]
        # A paused job resumes at its latest resume point at the latest (the deadline).
        entry.start = min(entry.chunks[0][0], entry.latest_start) if entry.chunks else now
        self._schedule(entry)


def simulate(policy: str, jobs: Sequence[SimJob], actuals: Mapping[str, Series],
             forecasts: ForecastSource, slots: int | None = None,
             progress: Callable[[int], None] | None = None) -> list[Run]:
    """Replay ``jobs`` under ``policy``; one ``Run`` per stretch of execution, in the order
    they started (a whole job has one; an interruptible job one per chunk it ran in).

    ``forecasts`` is what ``once`` and ``gridshift`` see; ``oracle`` sees ``actuals``.
    ``progress`` is called with the number of jobs submitted so far.
    """
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r} (policies: {', '.join(POLICIES)})")
    if slots is not None and slots < 1:
        raise BadInput("--slots must be at least 1")
    source = KnownSeries(actuals) if policy == "oracle" else forecasts
    return _Engine(policy, jobs, source, slots, progress).run()
