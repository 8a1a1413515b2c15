"""The virtual clock: replay jobs under one policy, deciding with the real planner.

Nothing sleeps: the clock jumps from event to event (a submission, a new forecast vintage,
a planned start, a job's end). Every placement comes from ``scheduler.planner.plan`` with
``now`` set to the virtual time, the regions' ``slots``, and running jobs held as ``Busy``:
the same least-slack order, tie and missing-data rules as the daemon.

Policies:
- ``now``: start at submission (a nightly job at its usual time) in the job's first region.
- ``once``: plan each job once, at its submission, from the forecast known then, around the
  slots other jobs already hold; never re-plan (what single-shot tools do).
- ``gridshift``: re-plan every unstarted job at each decision time: a submission, a new
  forecast vintage, and (when slots are limited) a job's end, as the daemon re-plans on
  every change.
- ``oracle``: ``gridshift``'s decisions with the actuals as the forecast.

Dispatch follows the daemon: a job starts at its planned start if its region has a free
slot; otherwise it waits for one, and starts over capacity at its latest start rather than
miss its deadline. Slots ``None`` means unlimited.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.errors import BadInput
from scheduler.planner import Busy, JobRequest, plan
from scheduler.simulate.series import ForecastSource, KnownSeries, Series
from scheduler.simulate.workloads import SimJob

POLICIES = ("now", "once", "gridshift", "oracle")

# Event kinds, in the order they are handled at one instant: a slot frees before anyone
# decides, and decisions come before the starts they schedule (the daemon plans, then
# dispatches).
_END, _DECIDE, _VINTAGE, _START = 0, 1, 2, 3


@dataclass(frozen=True)
class Run:
    """Where and when a job actually ran in the simulation."""

    job: SimJob
    region: str
    start: float

    @property
    def end(self) -> float:
        return self.start + self.job.duration_s


@dataclass
class _Pending:
    job: SimJob
    region: str = ""
    start: float = 0.0
    version: int = 0
    waiting: bool = False


@dataclass
class _Engine:
    policy: str
    jobs: Sequence[SimJob]
    source: ForecastSource
    slots: int | None
    progress: Callable[[int], None] | None = None
    events: list[tuple[float, int, int, int]] = field(default_factory=list)
    pending: dict[int, _Pending] = field(default_factory=dict)
    running: dict[int, Run] = field(default_factory=dict)
    in_use: dict[str, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
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
        return self.runs

    def _push(self, time: float, kind: int, job_id: int, version: int) -> None:
        heapq.heappush(self.events, (time, kind, job_id, version))

    def _instant(self, now: float, batch: list[tuple[float, int, int, int]]) -> None:
        freed = [job_id for _, kind, job_id, _ in batch if kind == _END]
        for job_id in freed:
            finished = self.running.pop(job_id)
            self.in_use[finished.region] -= 1
        submitted = [self.by_id[job_id] for _, kind, job_id, _ in batch if kind == _DECIDE]
        for job in submitted:
            self.pending[job.job_id] = _Pending(job)
        new_vintage = any(kind == _VINTAGE for _, kind, _, _ in batch)
        replans_all = self.policy in ("gridshift", "oracle")
        if replans_all and (submitted or new_vintage or (freed and self.slots is not None)):
            self._plan(list(self.pending.values()), now, hold_planned=False)
        elif submitted:
            if self.policy == "now":
                for job in submitted:
                    self._set_plan(self.pending[job.job_id], job.regions[0],
                                   max(job.baseline_start, now))
            else:
                self._plan([self.pending[j.job_id] for j in submitted], now, hold_planned=True)
        if submitted:
            self.decided += len(submitted)
            if self.progress is not None:
                self.progress(self.decided)
        due = [self.pending[job_id] for _, kind, job_id, version in batch
               if kind == _START and job_id in self.pending
               and self.pending[job_id].version == version]
        if freed:  # a freed slot goes to jobs already waiting for one
            due += [p for p in self.pending.values() if p.waiting and p.start <= now]
        for entry in sorted({p.job.job_id: p for p in due}.values(),
                            key=lambda p: (p.start, p.job.job_id)):
            self._try_start(entry, now)

    def _plan(self, entries: list[_Pending], now: float, hold_planned: bool) -> None:
        """Place ``entries`` with the real planner at ``now``; schedule their starts."""
        if not entries:
            return
        requests = [JobRequest(p.job.job_id, p.job.duration_s, p.job.submit, p.job.deadline,
                               p.job.regions) for p in entries]
        regions = sorted({r for p in entries for r in p.job.regions})
        until = max(p.job.deadline for p in entries)
        forecasts = {r: self.source.view(r, now, until) for r in regions}
        busy: list[Busy] = []
        if self.slots is None:
            slots = dict.fromkeys(regions, len(self.jobs) + 1)  # never full: busy is moot
        else:
            slots = dict.fromkeys(regions, self.slots)
            wanted = set(regions)
            busy = [Busy(r.region, r.start, r.end) for r in self.running.values()
                    if r.region in wanted and r.end > now]
            if hold_planned:
                chosen = {p.job.job_id for p in entries}
                busy += [Busy(p.region, p.start, p.start + p.job.duration_s)
                         for p in self.pending.values()
                         if p.job.job_id not in chosen and p.region in wanted and p.version]
        by_id = {p.job.job_id: p for p in entries}
        for placement in plan(requests, forecasts, slots, now, busy):
            self._set_plan(by_id[placement.job_id], placement.region, placement.start)

    def _set_plan(self, entry: _Pending, region: str, start: float) -> None:
        entry.region, entry.start = region, start
        entry.version += 1
        entry.waiting = False
        self._push(start, _START, entry.job.job_id, entry.version)

    def _try_start(self, entry: _Pending, now: float) -> None:
        job = entry.job
        full = self.slots is not None and self.in_use.get(entry.region, 0) >= self.slots
        if full and now < job.latest_start:
            if not entry.waiting:  # wait for a slot; at the latest start it goes regardless
                entry.waiting = True
                self._push(job.latest_start, _START, job.job_id, entry.version)
            return
        del self.pending[job.job_id]
        started = Run(job, entry.region, now)
        self.running[job.job_id] = started
        self.in_use[entry.region] = self.in_use.get(entry.region, 0) + 1
        self.runs.append(started)
        self._push(started.end, _END, job.job_id, 0)


def simulate(policy: str, jobs: Sequence[SimJob], actuals: Mapping[str, Series],
             forecasts: ForecastSource, slots: int | None = None,
             progress: Callable[[int], None] | None = None) -> list[Run]:
    """Replay ``jobs`` under ``policy``; one ``Run`` per job, in start order.

    ``forecasts`` is what ``once`` and ``gridshift`` see; ``oracle`` sees ``actuals``.
    ``progress`` is called with the number of jobs submitted so far.
    """
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r} (policies: {', '.join(POLICIES)})")
    if slots is not None and slots < 1:
        raise BadInput("--slots must be at least 1")
    source = KnownSeries(actuals) if policy == "oracle" else forecasts
    return _Engine(policy, jobs, source, slots, progress).run()
