"""The daemon's loop driven one step at a time (no threads, no sleeping): the real store,
the real csv provider, ``now`` passed in."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from scheduler import render, replanning
from scheduler.daemon import Daemon
from scheduler.models import Job, JobState
from scheduler.store import NewJob, PointRecord, Store
from tests.conftest import Workspace, floor_hour, hourly, write_csv

HOUR = timedelta(hours=1)


def values_with_dip(dip_hour: int, dip_value: float) -> list[float]:
    return [dip_value if hour == dip_hour else 300.0 for hour in range(30)]


def one_job_before_a_dip(csv_workspace: Callable[..., Workspace]
                         ) -> tuple[datetime, datetime, Workspace, Store, Daemon, Job]:
    """Region "here" with a dip 6 hours on, its forecast refreshed, one 1-hour job queued."""
    now = datetime.now(UTC)
    first_hour = floor_hour(now)
    workspace = csv_workspace({"here": hourly(first_hour, values_with_dip(6, 100.0))})
    store = workspace.store()
    daemon = Daemon(workspace.config(), store)
    daemon.refresh(now)
    job = store.add_job(NewJob(name="train", argv=["true"], cwd=str(workspace.root), env={},
                               duration_s=3600, not_before=now, deadline=now + 20 * HOUR,
                               regions=["here"], power_watts=100.0), now)
    return now, first_hour, workspace, store, daemon, job


def test_unstarted_jobs_are_replanned_when_new_forecasts_or_jobs_arrive(
    csv_workspace: Callable[..., Workspace]
) -> None:
    now, first_hour, workspace, store, daemon, job = one_job_before_a_dip(csv_workspace)

    daemon.tick(now)  # a new job: planned into the dip
    planned = store.get_job(job.id)
    assert (planned.state, planned.planned_start) == (JobState.PLANNED, first_hour + 6 * HOUR)

    daemon.tick(now + timedelta(seconds=5))  # nothing new: no new plan, no new event
    assert len(store.job_events(job.id)) == 2

    # The provider publishes a new vintage with a deeper dip earlier on.
    csv_path = workspace.config().providers["here"].path
    assert csv_path is not None
    write_csv(csv_path, hourly(first_hour, values_with_dip(3, 50.0)))
    later = now + timedelta(minutes=1)
    os.utime(csv_path, (later.timestamp(), later.timestamp()))  # a new vintage, surely
    daemon.refresh(later)
    daemon.tick(later)
    replanned = store.get_job(job.id)
    assert (replanned.planned_start, replanned.planned_intensity) == (
        first_hour + 3 * HOUR, 50.0)
    assert replanned.planned_vintage is not None and replanned.planned_vintage > now
    history = store.job_events(job.id)
    assert [e.new_state for e in history] == ["queued", "planned", "planned"]
    assert history[-1].reason.startswith("re-planned: here at")
    store.close()


def test_a_job_whose_regions_left_the_config_never_blocks_the_others(
    csv_workspace: Callable[..., Workspace]
) -> None:
    """After `regions.gone` is removed from the config and the daemon restarted, a job
    planned there waits (with a log line) and every other job is still planned and
    launched."""
    now = datetime.now(UTC)
    workspace = csv_workspace({"here": hourly(floor_hour(now) - HOUR, [300.0] * 30)},
                              slots=2)
    store = workspace.store()
    daemon = Daemon(workspace.config(), store)
    daemon.refresh(now)

    def add(regions: list[str]) -> int:
        return store.add_job(NewJob(name="j", argv=["true"], cwd=str(workspace.root), env={},
                                    duration_s=60, not_before=now - HOUR,
                                    deadline=now + 2 * HOUR, regions=regions,
                                    power_watts=100.0), now - HOUR).id

    orphan, stranded, ok = add(["gone"]), add(["gone", "here"]), add(["here"])
    store.transition(orphan, (JobState.QUEUED,), JobState.PLANNED, now - HOUR, "planned",
                     planned_region="gone", planned_start=now - timedelta(minutes=1))

    daemon.tick(now)

    assert store.get_job(orphan).state == JobState.PLANNED  # waits for its region
    for job_id in (stranded, ok):
        job = store.get_job(job_id)
        assert job.state in (JobState.RUNNING, JobState.SUCCEEDED), job.state
        assert job.run_region == "here"
    heartbeat = store.heartbeat()
    assert heartbeat is not None and heartbeat.heartbeat_at == now
    give_up = time.monotonic() + 30
    while store.running_jobs() and time.monotonic() < give_up:  # reap: `true` ends at once
        time.sleep(0.05)
        daemon.tick(datetime.now(UTC))
    assert [store.get_job(j).state for j in (stranded, ok)] == [JobState.SUCCEEDED] * 2
    store.close()


def test_a_percentile_index_is_never_ranked_against_grams_or_another_index(
    csv_workspace: Callable[..., Workspace]
) -> None:
    """WattTime's signal_index is a 0-100 percentile within one region. A job that may run
    in a region measured in gCO2/kWh and one measured by that index is planned among the
    gram regions only (an index of 5 is not cleaner than 60 g), and a job with only index
    regions stays in its first one; `show` says which regions were left out."""
    now = datetime.now(UTC)
    first_hour = floor_hour(now)
    names = ("grams", "index", "other_index")
    workspace = csv_workspace({name: hourly(first_hour, [1.0]) for name in names})
    store = workspace.store()
    grams = [60.0 if hour == 8 else 300.0 for hour in range(30)]
    index = [5.0 if hour == 4 else 90.0 for hour in range(30)]
    other_index = [1.0] * 30
    for name, values, units in (("grams", grams, "gco2_per_kwh"),
                                ("index", index, "percentile"),
                                ("other_index", other_index, "percentile")):
        store.add_points(name, name, [PointRecord(s, e, v, units=units, signal="marginal")
                                      for s, e, v in hourly(first_hour, values)], now)

    def add(regions: list[str]) -> int:
        return store.add_job(NewJob(name="j", argv=["true"], cwd=str(workspace.root), env={},
                                    duration_s=3600, not_before=now, deadline=now + 20 * HOUR,
                                    regions=regions, power_watts=100.0), now).id

    mixed, indexes_only = add(["index", "grams"]), add(["index", "other_index"])
    Daemon(workspace.config(), store).tick(now)

    planned = store.get_job(mixed)
    assert (planned.planned_region, planned.planned_start, planned.planned_intensity) == (
        "grams", first_hour + 8 * HOUR, 60.0)
    assert planned.plan_left_out == ["index"]
    assert "left out index: a percentile index" in render.job_json(planned)["plan_note"]
    alone = store.get_job(indexes_only)
    assert (alone.planned_region, alone.planned_start) == ("index", first_hour + 4 * HOUR)
    assert alone.plan_left_out == ["other_index"]
    assert "left out other_index" in render.job_json(alone)["plan_note"]
    store.close()

    preview = workspace.cli("plan", "--duration", "1h", "--within", "20h", "--region", "index",
                            "--region", "grams", "--json").json()
    assert [o["region"] for o in preview["options"]] == ["grams"]
    assert (preview["left_out"], preview["run_now"]["region"]) == (["index"], "grams")
    shown = workspace.cli("plan", "--duration", "1h", "--within", "20h", "--region", "index",
                          "--region", "grams")
    assert shown.stdout.splitlines()[-1].startswith("not ranked: index (a percentile index")


def test_a_plan_stored_as_words_before_0010_keeps_them_until_its_next_replan(
    csv_workspace: Callable[..., Workspace]
) -> None:
    """Jobs planned before migration 0010 have their note as words and no reason: `show`
    prints those words, and the next re-plan stores the note's parts (the same words when
    printed) without moving the job or recording an event."""
    now, first_hour, workspace, store, daemon, job = one_job_before_a_dip(csv_workspace)
    daemon.tick(now)
    planned = render.job_json(store.get_job(job.id))
    assert (planned["plan_note"], planned["plan_reason"]) == (
        "cleanest covered window", "covered_window")

    store.update_job_fields(job.id, plan_note="words of an older gridshift", plan_reason=None,
                            plan_replayed=None)
    legacy = render.job_json(store.get_job(job.id))
    assert (legacy["plan_note"], legacy["plan_reason"]) == (
        "words of an older gridshift", None)

    assert replanning.replan(store, workspace.config(), now + timedelta(seconds=5)) == 0
    rewritten = store.get_job(job.id)
    assert (rewritten.plan_note, rewritten.plan_reason, rewritten.plan_replayed) == (
        None, 1, False)
    assert render.job_json(rewritten)["plan_note"] == "cleanest covered window"
    assert rewritten.planned_start == first_hour + 6 * HOUR
    assert len(store.job_events(job.id)) == 2  # queued, planned: no re-plan event
    store.close()
