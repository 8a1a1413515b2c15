"""The use cases behind the API, on a real SQLite file: submit (one transaction), arrays,
who may cancel what, and the list queries."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler import jobs
from scheduler.api import handle_local
from scheduler.errors import BadInput, PermissionDenied
from scheduler.models import JobRun, JobState
from scheduler.records import ApiRequest, ChunkPlan, SubmitRequest
from tests.conftest import Workspace, floor_hour, hourly, write_csv

HOUR = timedelta(hours=1)
ALICE = jobs.Caller(uid=60001, gid=60001, name="alice", admin=False)
BOB = jobs.Caller(uid=60002, gid=60002, name="bob", admin=False)
ADMIN = jobs.Caller(uid=60003, gid=60003, name="carol", admin=True)


@pytest.fixture
def workspace(csv_workspace: Callable[..., Workspace]) -> Workspace:
    first = floor_hour(datetime.now(UTC)) - 2 * HOUR
    values = [300.0] * 5 + [50.0, 50.0] + [300.0] * 30
    return csv_workspace({"a": hourly(first, values)}, slots=2)


def request(now: datetime, **changes: object) -> SubmitRequest:
    values: dict[str, object] = {
        "argv": ["python", "train.py"], "duration_s": 3600, "not_before": now,
        "deadline": now + 24 * HOUR, "cwd": "/tmp", "umask": 0o022,
        "environment": {"PATH": "/usr/bin", "SECRET": "s3cret"}, "env": {"LR": "0.1"},
    }
    values.update(changes)
    return SubmitRequest(**values)  # type: ignore[arg-type]


def test_submit_records_the_owner_environment_and_plan(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    [job] = jobs.submit(store, workspace.config(), ALICE, request(now), now)
    stored = store.get_job(job.id)
    assert (stored.owner_uid, stored.owner_gid, stored.owner_name) == (60001, 60001, "alice")
    assert stored.environment == {"PATH": "/usr/bin", "SECRET": "s3cret"}
    assert stored.env == {"LR": "0.1"} and stored.umask == 0o022
    assert stored.state == "planned" and stored.planned_region == "a"
    assert [e.new_state for e in store.job_events(job.id)] == ["queued", "planned"]


def test_a_submit_that_fails_midway_stores_nothing(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    with sqlite3.connect(workspace.db_path) as connection:
        connection.execute("CREATE TRIGGER refuse_plans BEFORE INSERT ON job_events "
                           "WHEN NEW.new_state = 'planned' "
                           "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(Exception, match="disk full"):
        jobs.submit(store, workspace.config(), ALICE, request(now), now)
    with sqlite3.connect(workspace.db_path) as connection:
        assert connection.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM job_events").fetchone() == (0,)


def test_bad_requests_write_nothing(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    config = workspace.config()
    for bad in (request(now, regions=["mars"]), request(now, deadline=now + HOUR / 2),
                request(now, argv=[]), request(now, array=[1, 1]),
                request(now, env={"A": "x\0y"}), request(now, power_watts=1e9),
                request(now, cwd="relative")):
        with pytest.raises(BadInput):
            jobs.submit(store, config, ALICE, bad, now)
    assert store.list_jobs() == []


def test_an_array_is_one_job_per_index_with_the_first_id_as_array_id(
        workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    tasks = jobs.submit(store, workspace.config(), ALICE, request(now, array=[0, 2, 4]), now)
    assert [t.array_index for t in tasks] == [0, 2, 4]
    assert {t.array_id for t in tasks} == {tasks[0].id}
    # Two slots: the two cleanest hours take two tasks, the third waits for a free slot.
    starts = sorted(t.planned_start for t in tasks if t.planned_start is not None)
    assert len(starts) == 3 and starts[0] == starts[1] < starts[2]

    cancelled = jobs.cancel_array(store, workspace.config(), ALICE, tasks[0].id, now)
    assert [c.job_id for c in cancelled] == [t.id for t in tasks]
    assert {store.get_job(t.id).state for t in tasks} == {"cancelled"}
    with pytest.raises(BadInput, match="already ended"):
        jobs.cancel_array(store, workspace.config(), ALICE, tasks[0].id, now)
    with pytest.raises(BadInput, match="no array"):
        jobs.cancel_array(store, workspace.config(), ALICE, 999, now)


def test_only_the_owner_or_an_admin_may_cancel(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    config = workspace.config()
    [job] = jobs.submit(store, config, ALICE, request(now), now)
    with pytest.raises(PermissionDenied, match="belongs to alice"):
        jobs.cancel(store, config, BOB, job.id, now)
    assert store.get_job(job.id).state == "planned"
    assert jobs.cancel(store, config, ADMIN, job.id, now).state == "cancelled"
    assert "by user carol" in store.job_events(job.id)[-1].reason


def test_jobs_from_before_owners_belong_to_the_daemons_user(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    config = workspace.config()
    [job] = jobs.submit(store, config, ALICE, request(now), now)
    with sqlite3.connect(workspace.db_path) as connection:
        connection.execute("UPDATE jobs SET owner_uid = NULL, owner_name = NULL")
    me = jobs.Caller(os.getuid(), os.getgid(), "me", admin=False)
    assert jobs.cancel(store, config, me, job.id, now).state == "cancelled"


def test_list_shows_unfinished_jobs_newest_first_and_filters_by_owner(
        workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    config = workspace.config()
    first = jobs.submit(store, config, ALICE, request(now), now)[0]
    second = jobs.submit(store, config, BOB, request(now), now)[0]
    third = jobs.submit(store, config, ALICE, request(now), now)[0]
    jobs.cancel(store, config, ALICE, third.id, now)

    def ids(query: jobs.JobQuery) -> list[int]:
        return [job.id for job in jobs.list_jobs(store, query)]

    assert ids(jobs.JobQuery()) == [second.id, first.id]
    assert ids(jobs.JobQuery(include_finished=True)) == [third.id, second.id, first.id]
    assert ids(jobs.JobQuery(include_finished=True, user="alice")) == [third.id, first.id]
    assert ids(jobs.JobQuery(uid=BOB.uid)) == [second.id]
    assert ids(jobs.JobQuery(include_finished=True, limit=1)) == [third.id]


# Interruptible jobs ---------------------------------------------------------------------


def test_an_interruptible_job_is_stored_with_its_settings_and_defaults(
        workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    config = workspace.config()
    [checkpoint] = jobs.submit(store, config, ALICE, request(
        now, duration_s=4 * 3600, interruptible="checkpoint", checkpoint_signal="usr1",
        restart_overhead_s=300), now)
    [suspend] = jobs.submit(store, config, ALICE, request(
        now, interruptible="suspend", min_chunk_s=600, max_pauses=2), now)
    [whole] = jobs.submit(store, config, ALICE, request(now), now)

    def settings(job_id: int) -> tuple[object, ...]:
        job = store.get_job(job_id)
        return (job.interruptible, job.min_chunk_s, job.max_pauses, job.restart_overhead_s,
                job.checkpoint_signal, job.checkpoint_grace_s)

    assert settings(checkpoint.id) == ("checkpoint", 1800, None, 300, "SIGUSR1", 120)
    assert settings(suspend.id) == ("suspend", 600, 2, 0, None, None)
    assert settings(whole.id) == (None,) * 6


def test_an_array_may_be_interruptible(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    tasks = jobs.submit(store, workspace.config(), ALICE, request(
        now, array=[0, 1], interruptible="suspend", min_chunk_s=900), now)
    assert [(t.interruptible, t.min_chunk_s) for t in tasks] == [("suspend", 900)] * 2


@pytest.mark.parametrize(("changes", "message"), [
    ({"interruptible": "pause"}, "unknown --interruptible mode 'pause'"),
    ({"min_chunk_s": 600}, "--min-chunk is for interruptible jobs"),
    ({"max_pauses": 2}, "--max-pauses is for interruptible jobs"),
    ({"checkpoint_grace_s": 60}, "--checkpoint-grace is for interruptible jobs"),
    ({"interruptible": "suspend", "restart_overhead_s": 60},
     "--restart-overhead is for --interruptible checkpoint"),
    ({"interruptible": "suspend", "checkpoint_signal": "SIGUSR1"},
     "--checkpoint-signal is for --interruptible checkpoint"),
    ({"interruptible": "checkpoint", "min_chunk_s": 0}, "--min-chunk must be above zero"),
    ({"interruptible": "checkpoint", "min_chunk_s": 3601},
     r"--min-chunk 1h1s is longer than the job \(--duration 1h\)"),
    ({"interruptible": "checkpoint", "max_pauses": -1}, "--max-pauses must be a whole number"),
    ({"interruptible": "checkpoint", "restart_overhead_s": -5},
     "--restart-overhead must be from 0"),
    ({"interruptible": "checkpoint", "checkpoint_grace_s": 0},
     "--checkpoint-grace must be above zero"),
    ({"interruptible": "checkpoint", "checkpoint_signal": "SIGKILL"}, "cannot be caught"),
    ({"interruptible": "checkpoint", "checkpoint_signal": "stop"}, "SIGSTOP cannot be caught"),
    ({"interruptible": "checkpoint", "checkpoint_signal": "SIGNOPE"},
     "unknown --checkpoint-signal 'SIGNOPE'"),
])
def test_bad_interruptible_settings_are_refused_by_the_use_case(
        workspace: Workspace, changes: dict[str, object], message: str) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    with pytest.raises(BadInput, match=message):
        jobs.submit(store, workspace.config(), ALICE, request(now, **changes), now)
    assert store.list_jobs() == []


def test_interruptible_jobs_keep_out_of_slurm_regions(make_workspace: Callable[..., Workspace],
                                                      tmp_path: Path) -> None:
    rows = hourly(floor_hour(datetime.now(UTC)), [100.0] * 30)
    write_csv(tmp_path / "a.csv", rows)
    workspace = make_workspace(
        f'[providers.a]\nkind = "csv"\npath = "{tmp_path / "a.csv"}"\n'
        '[regions.local]\nprovider = "a"\nzone = "a"\n'
        '[regions.cluster]\nprovider = "a"\nzone = "a"\nexecutor = "slurm"\n')
    now = datetime.now(UTC)
    store = workspace.store()
    config = workspace.config()
    with pytest.raises(BadInput, match="cannot run in Slurm region 'cluster'"):
        jobs.submit(store, config, ALICE, request(now, interruptible="suspend",
                                                  regions=["local", "cluster"]), now)
    assert store.list_jobs() == []
    # Without --region: every region but the Slurm ones.
    [job] = jobs.submit(store, config, ALICE, request(now, interruptible="suspend"), now)
    assert job.regions == ["local"]
    [whole] = jobs.submit(store, config, ALICE, request(now), now)
    assert whole.regions == ["local", "cluster"]


def test_the_api_refuses_a_bad_interruptible_body(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    body = request(now, interruptible="checkpoint").as_json()
    for bad in ({"max_pauses": "3"}, {"max_pauses": 1.5}, {"interruptible": 1},
                {"max_pauses": -2}, {"checkpoint_signal": "SIGKILL"}):
        answer = handle_local(workspace.config(), ApiRequest("POST", "/jobs",
                                                             body={**body, **bad}), now)
        assert (answer.status, answer.document()["exit_code"]) == (400, 2), bad
    stored = workspace.store()
    assert stored.list_jobs() == []
    answer = handle_local(workspace.config(), ApiRequest("POST", "/jobs", body=body), now)
    assert answer.status == 201 and answer.document()["interruptible"] == "checkpoint"


def test_paused_jobs_are_listed_as_unfinished(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    store = workspace.store()
    [job] = jobs.submit(store, workspace.config(), ALICE,
                        request(now, interruptible="suspend"), now)
    store.transition(job.id, [JobState.PLANNED], JobState.RUNNING, now, "launched",
                     started_at=now, run_region="a")
    store.transition(job.id, [JobState.RUNNING], JobState.PAUSED, now,
                     "paused at the end of its chunk (suspended)")
    assert [j.id for j in jobs.list_jobs(store, jobs.JobQuery())] == [job.id]
    assert [j.id for j in jobs.list_jobs(store, jobs.JobQuery(
        states=[JobState.PAUSED]))] == [job.id]


def test_show_reads_an_interruptible_jobs_chunks_and_runs(workspace: Workspace) -> None:
    now = floor_hour(datetime.now(UTC))
    store = workspace.store()
    [job] = jobs.submit(store, workspace.config(), ALICE, request(
        now, duration_s=3 * 3600, interruptible="checkpoint"), now)
    chunks = [ChunkPlan("a", now + i * 2 * HOUR, now + (i * 2 + 1) * HOUR, 50.0 + i)
              for i in range(3)]
    store.save_chunks({job.id: chunks})
    with store.writing() as session:
        session.add_all([JobRun(job_id=job.id, run=2, region="a", started_at=now - HOUR),
                         JobRun(job_id=job.id, run=1, region="a", started_at=now - 3 * HOUR,
                                ended_at=now - 2 * HOUR, outcome="checkpointed")])
    detail = jobs.show(store, job.id)
    assert detail.chunks == chunks
    assert [(r.run, r.outcome) for r in detail.runs] == [(1, "checkpointed"), (2, None)]
    [whole] = jobs.submit(store, workspace.config(), ALICE, request(now), now)
    assert (jobs.show(store, whole.id).chunks, jobs.show(store, whole.id).runs) == ([], [])
