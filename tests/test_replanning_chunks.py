"""Re-planning interruptible jobs against a real store: chunks written to job_chunks, the
first chunk in the job's plan, events when a plan moves, regions kept once a job has run,
a running job's chunk cut or extended, and slots never overbooked."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import render, replanning
from scheduler.daemon import Daemon
from scheduler.models import JobState
from scheduler.records import NewJob
from scheduler.store import Store
from tests.conftest import Workspace, floor_hour, hourly, write_csv

HOUR = timedelta(hours=1)
DIRTY, CLEAN = 400.0, 100.0


def valleys(*hours: int, length: int = 24) -> list[float]:
    """A day of hourly values, clean in the given hours and dirty in every other."""
    return [CLEAN if hour in hours else DIRTY for hour in range(length)]


def workspace_with(make_workspace: Callable[..., Workspace], root: Path,
                   series: dict[str, list[float]], start: datetime, slots: int = 4,
                   database_url: str | None = None) -> Workspace:
    body = []
    for name, values in series.items():
        path = write_csv(root / f"{name}.csv", hourly(start, values))
        body.append(f'[providers.{name}]\nkind = "csv"\npath = "{path}"\n'
                    f'[regions.{name}]\nprovider = "{name}"\nzone = "{name}"\n'
                    f"slots = {slots}\n")
    return make_workspace("\n".join(body), database_url=database_url)


def new_job(workspace: Workspace, now: datetime, regions: list[str], duration: timedelta,
            interruptible: str | None = "suspend", deadline: timedelta = 20 * HOUR,
            **fields: int) -> NewJob:
    return NewJob(name="train", argv=["true"], cwd=str(workspace.root), env={},
                  duration_s=int(duration.total_seconds()), not_before=now,
                  deadline=now + deadline, regions=regions, power_watts=100.0,
                  interruptible=interruptible,
                  min_chunk_s=fields.pop("min_chunk_s", 1800) if interruptible else None,
                  **fields)


def chunks_of(store: Store, job_id: int) -> list[tuple[str, datetime, datetime]]:
    return [(c.region, c.start, c.end) for c in store.job_chunks(job_id)]


def refreshed(workspace: Workspace, store: Store, now: datetime) -> None:
    Daemon(workspace.config(), store).refresh(now)


def test_a_two_hour_job_takes_both_valleys_and_its_whole_twin_one_block(
        make_workspace: Callable[..., Workspace], tmp_path: Path, database_url: str) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(3, 9)}, start,
                               database_url=database_url)
    store = workspace.store()
    refreshed(workspace, store, now)
    chunked = store.add_job(new_job(workspace, now, ["here"], 2 * HOUR), now)
    whole = store.add_job(new_job(workspace, now, ["here"], 2 * HOUR, interruptible=None), now)

    assert replanning.replan(store, workspace.config(), now) == 2

    assert chunks_of(store, chunked.id) == [
        ("here", start + 3 * HOUR, start + 4 * HOUR),
        ("here", start + 9 * HOUR, start + 10 * HOUR)]
    job = store.get_job(chunked.id)
    assert (job.state, job.planned_region, job.planned_start, job.chunk_end) == (
        JobState.PLANNED, "here", start + 3 * HOUR, start + 4 * HOUR)
    assert job.planned_intensity == CLEAN
    assert job.plan_chunk_count == 2
    assert "in 2 chunks" in render.job_json(job)["plan_note"]
    twin = store.get_job(whole.id)
    assert twin.planned_intensity == (CLEAN + DIRTY) / 2  # one block: a valley and a hill
    assert chunks_of(store, whole.id) == []

    # Nothing changed: a second re-plan writes nothing and records no event.
    assert replanning.replan(store, workspace.config(), now + timedelta(seconds=5)) == 0
    assert len(store.job_events(chunked.id)) == 2
    store.close()


def test_a_new_forecast_vintage_moves_future_chunks(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(3, 9)}, start)
    store = workspace.store()
    refreshed(workspace, store, now)
    job = store.add_job(new_job(workspace, now, ["here"], 2 * HOUR), now)
    replanning.replan(store, workspace.config(), now)

    csv_path = tmp_path / "here.csv"
    write_csv(csv_path, hourly(start, valleys(5, 12)))
    later = now + timedelta(minutes=1)
    os.utime(csv_path, (later.timestamp(), later.timestamp()))  # a new vintage
    refreshed(workspace, store, later)
    assert replanning.replan(store, workspace.config(), later) == 1

    assert chunks_of(store, job.id) == [("here", start + 5 * HOUR, start + 6 * HOUR),
                                        ("here", start + 12 * HOUR, start + 13 * HOUR)]
    assert store.get_job(job.id).planned_start == start + 5 * HOUR
    history = store.job_events(job.id)
    assert [e.new_state for e in history] == ["queued", "planned", "planned"]
    assert history[-1].reason.startswith("re-planned: here at")
    store.close()


def run_then_pause(store: Store, job_id: int, region: str, started: datetime,
                   paused: datetime) -> None:
    """What the runtime does: a first run in ``region`` from ``started``, paused at
    ``paused`` with its work so far recorded."""
    store.transition(job_id, [JobState.QUEUED], JobState.PLANNED, started, "planned",
                     planned_region=region, planned_start=started)
    store.transition(job_id, [JobState.PLANNED], JobState.RUNNING, started, "launched",
                     run_region=region, started_at=started, run_count=1)
    store.transition(job_id, [JobState.RUNNING], JobState.PAUSED, paused,
                     "paused at the end of its chunk (suspended)",
                     work_done_s=(paused - started).total_seconds())


def test_a_paused_job_stays_in_the_region_it_ran_in(
        make_workspace: Callable[..., Workspace], tmp_path: Path, database_url: str) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    # "there" is cleaner everywhere; the job ran in "here" and must go on there.
    workspace = workspace_with(make_workspace, tmp_path,
                               {"here": valleys(4, 8), "there": [50.0] * 24}, start,
                               database_url=database_url)
    store = workspace.store()
    refreshed(workspace, store, now)
    job = store.add_job(new_job(workspace, now - HOUR, ["here", "there"], 3 * HOUR), now)
    run_then_pause(store, job.id, "here", now - HOUR, now)

    assert replanning.replan(store, workspace.config(), now) == 1

    paused = store.get_job(job.id)
    assert paused.state == JobState.PAUSED
    assert chunks_of(store, job.id) == [("here", start + 4 * HOUR, start + 5 * HOUR),
                                        ("here", start + 8 * HOUR, start + 9 * HOUR)]
    assert (paused.planned_region, paused.planned_start, paused.chunk_end) == (
        "here", start + 4 * HOUR, start + 5 * HOUR)
    event = store.job_events(job.id)[-1]
    assert (event.old_state, event.new_state) == ("paused", "paused")
    assert event.reason.startswith("planned: here at")
    store.close()


def test_a_paused_checkpointed_job_pays_the_restart_overhead_on_every_chunk(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(4, 5, 6)}, start)
    store = workspace.store()
    refreshed(workspace, store, now)
    job = store.add_job(new_job(workspace, now - HOUR, ["here"], 3 * HOUR,
                                interruptible="checkpoint", restart_overhead_s=600), now)
    run_then_pause(store, job.id, "here", now - HOUR, now)

    replanning.replan(store, workspace.config(), now)

    held = sum((end - begin).total_seconds() for _, begin, end in chunks_of(store, job.id))
    chunks = len(chunks_of(store, job.id))
    assert held == 2 * 3600 + chunks * 600  # two hours left, each relaunch 10 minutes more
    store.close()


def start_running(store: Store, job_id: int, region: str, started: datetime,
                  chunk_end: datetime) -> None:
    store.transition(job_id, [JobState.QUEUED], JobState.PLANNED, started, "planned",
                     planned_region=region, planned_start=started)
    store.transition(job_id, [JobState.PLANNED], JobState.RUNNING, started, "launched",
                     run_region=region, started_at=started, run_count=1,
                     chunk_end=chunk_end)


def test_a_running_jobs_chunk_is_extended_through_clean_hours(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = floor_hour(datetime.now(UTC)) + timedelta(minutes=10)
    start = floor_hour(now)
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(0, 1, 2)}, start)
    store = workspace.store()
    refreshed(workspace, store, now)
    job = store.add_job(new_job(workspace, now - timedelta(minutes=10), ["here"], 2 * HOUR),
                        now)
    start_running(store, job.id, "here", start, start + timedelta(minutes=30))

    replanning.replan(store, workspace.config(), now)

    running = store.get_job(job.id)
    assert running.state == JobState.RUNNING  # no state change, no event
    assert len(store.job_events(job.id)) == 3
    assert chunks_of(store, job.id) == [("here", now, start + 2 * HOUR)]
    assert running.chunk_end == start + 2 * HOUR  # all its work, in the clean hours
    store.close()


def test_a_running_jobs_chunk_is_cut_before_dirty_hours(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = floor_hour(datetime.now(UTC)) + timedelta(minutes=10)
    start = floor_hour(now)
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(5, 6, 7)}, start)
    store = workspace.store()
    refreshed(workspace, store, now)
    job = store.add_job(new_job(workspace, now - timedelta(minutes=10), ["here"], 2 * HOUR),
                        now)
    start_running(store, job.id, "here", start, start + 2 * HOUR)

    replanning.replan(store, workspace.config(), now)

    # It has run ten minutes; the minimum chunk is 30: it pauses twenty minutes from now
    # and does the rest (1h40m) in the clean hours.
    chunks = chunks_of(store, job.id)
    assert chunks[0] == ("here", now, now + timedelta(minutes=20))
    assert store.get_job(job.id).chunk_end == now + timedelta(minutes=20)
    assert all(start + 5 * HOUR <= begin and end <= start + 8 * HOUR
               for _, begin, end in chunks[1:])
    store.close()


def test_chunks_and_whole_jobs_never_put_a_region_over_its_slots(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(3, 4, 9, 10)},
                               start, slots=2)
    store = workspace.store()
    refreshed(workspace, store, now)
    ids = [store.add_job(new_job(workspace, now, ["here"], duration,
                                 interruptible=mode), now).id
           for duration, mode in ((2 * HOUR, "suspend"), (2 * HOUR, None), (HOUR, "suspend"),
                                  (3 * HOUR, "checkpoint"), (HOUR, None))]

    replanning.replan(store, workspace.config(), now)

    windows = []
    for job_id in ids:
        job = store.get_job(job_id)
        assert job.state == JobState.PLANNED
        chunks = chunks_of(store, job_id)
        if job.interruptible is None:
            assert job.planned_start is not None
            windows.append((job.planned_start,
                            job.planned_start + timedelta(seconds=job.duration_s)))
        else:
            windows.extend((begin, end) for _, begin, end in chunks)
            assert job.planned_start == chunks[0][1]
    for moment in {t for window in windows for t in window}:
        assert sum(1 for begin, end in windows if begin <= moment < end) <= 2
    store.close()


def test_a_submitted_interruptible_job_is_stored_with_its_chunks(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(3, 9)}, start,
                               slots=1)
    store = workspace.store()
    refreshed(workspace, store, now)
    spec = new_job(workspace, now, ["here"], 2 * HOUR)

    [update] = replanning.place_new(store, workspace.config(), [spec], now)
    [job] = store.add_jobs([spec], [update], now)

    assert chunks_of(store, job.id) == [("here", start + 3 * HOUR, start + 4 * HOUR),
                                        ("here", start + 9 * HOUR, start + 10 * HOUR)]
    stored = store.get_job(job.id)
    assert (stored.planned_start, stored.chunk_end) == (start + 3 * HOUR, start + 4 * HOUR)
    # The next submit plans around those chunks: one slot, and the valleys are taken.
    [second] = replanning.place_new(store, workspace.config(), [spec], now)
    taken = (start + 3 * HOUR, start + 4 * HOUR), (start + 9 * HOUR, start + 10 * HOUR)
    for chunk in second.chunks:
        assert all(chunk.end <= begin or chunk.start >= end for begin, end in taken)
    store.close()


def test_a_paused_job_at_its_latest_resume_point_resumes_now_in_one_block(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now)
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(5, 6)}, start)
    store = workspace.store()
    refreshed(workspace, store, now)
    # Two hours of work, one done: the hour left just fits before the deadline.
    job = store.add_job(new_job(workspace, now - HOUR, ["here"], 2 * HOUR,
                                deadline=2 * HOUR), now)
    run_then_pause(store, job.id, "here", now - HOUR, now)

    replanning.replan(store, workspace.config(), now)

    assert chunks_of(store, job.id) == [("here", now, now + HOUR)]
    assert store.get_job(job.id).planned_start == now
    store.close()


def test_a_job_that_used_its_pauses_runs_the_rest_in_one_chunk(
        make_workspace: Callable[..., Workspace], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start = floor_hour(now) + HOUR
    workspace = workspace_with(make_workspace, tmp_path, {"here": valleys(3, 9)}, start)
    store = workspace.store()
    refreshed(workspace, store, now)
    limited = store.add_job(new_job(workspace, now - HOUR, ["here"], 3 * HOUR,
                                    max_pauses=1), now)
    run_then_pause(store, limited.id, "here", now - HOUR, now)  # its one pause
    free = store.add_job(new_job(workspace, now - HOUR, ["here"], 3 * HOUR), now)
    run_then_pause(store, free.id, "here", now - HOUR, now)

    replanning.replan(store, workspace.config(), now)

    assert len(chunks_of(store, limited.id)) == 1
    assert len(chunks_of(store, free.id)) == 2  # both valleys
    store.close()
