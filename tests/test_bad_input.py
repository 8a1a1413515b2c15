"""Bad input never corrupts state: one clear error, exit code 2, nothing written.

Property tests drive the parsers the CLI and the daemon use with arbitrary text and
documents; CLI tests check the exit code and that the database did not change; daemon
tests show hostile jobs (huge argv, non-UTF-8, missing command, ignoring SIGTERM, endless
output) end cleanly while the daemon carries on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.config import parse_config
from scheduler.errors import BadInput, ConfigError
from scheduler.models import JobState
from scheduler.providers.base import ProviderError
from scheduler.providers.carbonintensity_uk import parse_forecast
from scheduler.providers.csvfile import parse_csv
from scheduler.timespec import MAX_DURATION, format_duration, parse_duration, parse_when
from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    job,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    submitted_id,
    wait_finished,
    wait_for,
    wait_state,
    workspace_command,
)
from tests.wrapper_process import start_wrapper

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)

# Parsers ----------------------------------------------------------------------------------


@given(st.one_of(TEXT, st.from_regex(r"\A[0-9]{1,12}[dhms]([0-9]{1,6}[dhms]){0,4}\Z")))
def test_duration_is_positive_and_bounded_or_one_bad_input(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except BadInput as error:
        assert repr(text) in str(error)
        return
    assert timedelta(0) < parsed <= MAX_DURATION
    assert parse_duration(format_duration(parsed)) == parsed


@given(st.one_of(
    TEXT,
    st.from_regex(r"\A\+[0-9]{1,12}[dhms]\Z"),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}([+-][0-9]{2}:[0-9]{2}|Z)?\Z"),
))
def test_time_is_aware_utc_or_one_bad_input(text: str) -> None:
    try:
        parsed = parse_when(text, NOW)
    except BadInput as error:
        assert repr(text) in str(error) or "duration" in str(error)
        return
    assert parsed.utcoffset() == timedelta(0)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), TEXT,
                    st.floats(allow_nan=True), st.just("sqlite:///tmp/x.db"), st.just("30m"))
KEYS = st.sampled_from(["database", "daemon", "providers", "regions", "url", "tick", "kind",
                        "csv", "provider", "zone", "slots", "launcher", "retention",
                        "max_log_bytes", "uk", "gb", "token", "base_url", "path"])
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, DOCUMENTS, max_size=4))
def test_config_is_valid_or_one_config_error_naming_file_and_key(raw: dict[str, Any]) -> None:
    try:
        config = parse_config(raw, "/etc/gridshift/config.toml", {})
    except ConfigError as error:
        assert str(error).startswith("/etc/gridshift/config.toml: ")
        return
    assert config.regions


@given(st.text(alphabet=st.sampled_from("0123456789-T:+Z,.\nabcdfkinorstuwy_ "), max_size=300))
def test_csv_is_parsed_whole_or_rejected_with_one_provider_error(body: str) -> None:
    text = "start,end,gco2_per_kwh,kind\n" + body
    try:
        points = parse_csv(text, "average", None, NOW, "test (csv)", "f.csv: ")
    except ProviderError as error:
        assert "test (csv)" in str(error)
        return
    assert points and all(p.end > p.start and p.value >= 0 for p in points)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT,
              st.just("2026-11-26T12:00Z"), st.just("2026-11-26T12:30Z")),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["data", "from", "to", "intensity",
                                                             "forecast", "actual"]),
                                            inner, max_size=4)),
    max_leaves=20)


@given(JSON)
def test_provider_payload_is_parsed_whole_or_rejected_with_one_provider_error(
    payload: Any,
) -> None:
    try:
        points = parse_forecast(payload, "national")
    except ProviderError:
        return
    assert points and all(p.end > p.start and p.value >= 0 for p in points)


# The CLI ----------------------------------------------------------------------------------


def forecast() -> dict[str, list[tuple[datetime, datetime, float]]]:
    return {"a": hourly(floor_hour(datetime.now(UTC)) - timedelta(hours=1), [200.0] * 30)}


def database_digest(ws: Workspace) -> str:
    """The database's content (after a checkpoint), to show nothing was written."""
    import sqlite3

    with sqlite3.connect(ws.db_path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()


BAD_SUBMITS = [
    ["--duration", "ten minutes", "--", "true"],
    ["--duration", "0s", "--", "true"],
    ["--duration", "99999d", "--", "true"],
    ["--duration", "1h", "--deadline", "tomorrow-ish", "--", "true"],
    ["--duration", "2h", "--within", "1h", "--", "true"],
    ["--duration", "1h", "--deadline", "+2h", "--within", "3h", "--", "true"],
    ["--duration", "1h", "--not-before", "1999-13-01", "--", "true"],
    ["--duration", "1h", "--region", "atlantis", "--", "true"],
    ["--duration", "1h", "--env", "NOEQUALS", "--", "true"],
    ["--duration", "1h", "--power", "-5", "--", "true"],
    ["--duration", "1h", "--power", "100001", "--", "true"],
    ["--duration", "1h", "--power", "inf", "--", "true"],
    ["--duration", "1h", "--power", "nan", "--", "true"],
    ["--duration", "1h", "--power", "lots", "--", "true"],
    ["--duration", "1h", "--no-such-option", "--", "true"],
    ["--duration"],
    ["--dur", "1h", "--", "true"],  # no abbreviations: --dur is not --duration
    ["--duration", "\u0661h", "--", "true"],
    ["--duration", "1h", "--not-before", "+\u0661h", "--", "true"],
    ["--duration", "1h", "--"],
    ["--duration", "1h", "--", ""],
    ["--duration", "1h", "--name", "n" * 201, "--", "true"],
    # Interruptible jobs.
    ["--duration", "1h", "--interruptible", "pause", "--", "true"],
    ["--duration", "1h", "--min-chunk", "10m", "--", "true"],
    ["--duration", "1h", "--max-pauses", "2", "--", "true"],
    ["--duration", "1h", "--restart-overhead", "5m", "--", "true"],
    ["--duration", "1h", "--checkpoint-signal", "USR1", "--", "true"],
    ["--duration", "1h", "--checkpoint-grace", "1m", "--", "true"],
    ["--duration", "1h", "--interruptible", "suspend", "--restart-overhead", "5m", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "suspend", "--checkpoint-signal", "USR1", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "suspend", "--checkpoint-grace", "1m", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--min-chunk", "2h", "--", "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--min-chunk", "0s", "--", "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--max-pauses", "-1", "--", "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--max-pauses", "1.5", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--max-pauses", "some", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--restart-overhead", "-5m", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--checkpoint-grace", "0s", "--",
     "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--checkpoint-signal", "SIGKILL",
     "--", "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--checkpoint-signal", "STOP",
     "--", "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--checkpoint-signal", "SIGFOO",
     "--", "true"],
    ["--duration", "1h", "--interruptible", "checkpoint", "--checkpoint-signal", "9",
     "--", "true"],
]


def test_bad_submissions_exit_2_with_one_line_and_write_nothing(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(forecast())
    assert ws.cli("submit", "--duration", "1h", "--", "true").returncode == 0
    before = database_digest(ws)
    for arguments in BAD_SUBMITS:
        result = ws.cli("submit", *arguments)
        assert result.returncode == 2, (arguments, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gridshift: "), (arguments, lines)
        assert "Traceback" not in result.stderr
    assert database_digest(ws) == before


def test_an_interruptible_job_for_a_slurm_region_exits_2_and_writes_nothing(
    make_workspace: Callable[..., Workspace], tmp_path: Path,
) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("start,end,gco2_per_kwh\n", encoding="utf-8")
    ws = make_workspace(f'[providers.a]\nkind = "csv"\npath = "{csv}"\n'
                        '[regions.cluster]\nprovider = "a"\nzone = "a"\nexecutor = "slurm"\n')
    for arguments in (["--region", "cluster"], []):
        result = ws.cli("submit", "--duration", "1h", "--interruptible", "suspend",
                        *arguments, "--", "true")
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Slurm region" in result.stderr
    assert not ws.db_path.exists()


@pytest.mark.parametrize("config_bytes", [
    b"[daemon\n",  # not TOML
    b"[daemon]\ntick = 5\n",  # not a duration string
    b"[daemon]\nmax_log_bytes = 12\n",
    b'[regions.x]\nprovider = "nowhere"\n',
    b"# caf\xe9\n",  # not UTF-8
    b"[daemon]\ndefault_power_watts = inf\n",
    b'[database]\nurl = "sqlite:///:memory:"\n',
    b'[database]\nurl = "mysql://gridshift@localhost/gridshift"\n',
    b'[providers.uk]\nkind = "carbonintensity_uk"\n[regions.gb]\nprovider = "uk"\n'
    b'launcher = ["env", "A=\\u0000"]\n',
])
def test_bad_config_exits_2_naming_the_file_and_creates_no_database(
    make_workspace: Callable[..., Workspace], config_bytes: bytes,
) -> None:
    ws = make_workspace("")
    ws.config_path.write_bytes(config_bytes)
    result = ws.cli("submit", "--duration", "1h", "--", "true")
    assert result.returncode == 2
    assert result.stderr.startswith(f"gridshift: {ws.config_path}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not ws.db_path.exists()


def test_a_bad_csv_forecast_stores_nothing_and_says_which_line(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(forecast())
    csv_path = ws.root / "a.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].replace("200.0", "lots")
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ws.cli("list")  # creates the database
    before = database_digest(ws)
    result = ws.cli("forecast", "--refresh")
    assert result.returncode != 0
    assert "line 6" in result.stderr and "Traceback" not in result.stderr
    assert _forecast_points(ws) == 0
    # Only the refresh outcome (for `status`) is recorded.
    assert database_digest(ws) != before


@pytest.mark.parametrize("job_id", ["99999999999999999999", "9223372036854775808", "0"])
def test_a_job_id_beyond_64_bits_is_bad_input_not_a_traceback(
    csv_workspace: Callable[..., Workspace], job_id: str,
) -> None:
    ws = csv_workspace(forecast())
    assert ws.cli("submit", "--duration", "1h", "--", "true").returncode == 0
    before = database_digest(ws)
    for command in ("show", "cancel"):
        result = ws.cli(command, job_id)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith("gridshift: bad job id")
        assert len(result.stderr.strip().splitlines()) == 1
    assert database_digest(ws) == before


def test_an_absurd_forecast_value_never_reaches_json_output(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """A csv value of 1e308 is refused at refresh with its line; plan --json stays JSON."""
    ws = csv_workspace(forecast())
    csv_path = ws.root / "a.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("200.0", "1e308")
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = ws.cli("forecast", "--refresh")
    assert result.returncode == 1
    assert "line 4: bad value 1e+308" in result.stderr and "Traceback" not in result.stderr
    assert _forecast_points(ws) == 0
    plan = ws.cli("plan", "--duration", "1h", "--json")
    strict = json.loads(plan.stdout or "null", parse_constant=_refuse)
    assert "NaN" not in plan.stdout and "Infinity" not in plan.stdout, strict


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")


def _forecast_points(ws: Workspace) -> int:
    import sqlite3

    with sqlite3.connect(ws.db_path) as connection:
        return int(connection.execute("SELECT count(*) FROM forecast_points").fetchone()[0])


# Hostile jobs with the real daemon --------------------------------------------------------


@pytest.mark.slow
def test_hostile_jobs_end_cleanly_and_the_daemon_carries_on(
    csv_workspace: Callable[..., Workspace],
) -> None:
    ws = csv_workspace(forecast(), slots=8,
                       daemon='tick = "1s"\nkill_grace = "2s"\nmax_log_bytes = 4096')
    huge = [f"argument-{n:06d}-" + "x" * 40 for n in range(20000)]  # about 1 MB of argv
    count_args = [sys.executable, "-c", "import sys; print(len(sys.argv) - 1)"]
    huge_job = submitted_id(ws.cli("submit", "--duration", "1m", "--", *count_args,
                                   *huge).stdout)
    # A non-UTF-8 argument, given as raw bytes the way a shell passes them.
    raw = subprocess.run(
        [*workspace_command(ws), "submit", "--duration", "1m", "--", sys.executable, "-c",
         "import os, sys; sys.stdout.buffer.write(os.fsencode(sys.argv[1]))", b"caf\xe9-\xff"],
        env=ws.env, cwd=ws.root, capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    bytes_job = submitted_id(raw.stdout.decode())
    missing_job = submitted_id(ws.cli("submit", "--duration", "1m", "--",
                                      "no-such-command-gridshift").stdout)
    chatty_job = submitted_id(ws.cli("submit", "--duration", "1m", "--", "sh", "-c",
                                     "head -c 200000000 /dev/zero; echo finished").stdout)
    stubborn_job = submitted_id(ws.cli("submit", "--duration", "1m", "--", "sh", "-c",
                                       "trap '' TERM; echo ready; sleep 60").stdout)
    daemon = DaemonProcess(ws)

    wait_state(ws, stubborn_job, (JobState.RUNNING,))
    stubborn_log = Path(wait_for(lambda: job(ws, stubborn_job).log_path, what="its log"))
    wait_for(lambda: stubborn_log.exists() and b"ready" in stubborn_log.read_bytes(),
             what="the stubborn job to install its trap")
    cancel = ws.cli("cancel", str(stubborn_job))
    assert cancel.returncode == 0, cancel.stderr

    ids = [huge_job, bytes_job, missing_job, chatty_job, stubborn_job]
    ended = {j.id: j for j in wait_finished(ws, ids, 90)}
    assert daemon.process.poll() is None, daemon.output()
    assert ws.cli("status").returncode == 0
    assert daemon.stop() == 0

    def log_of(job_id: int) -> bytes:
        return Path(ended[job_id].log_path or "").read_bytes()

    assert ended[huge_job].state == JobState.SUCCEEDED
    assert log_of(huge_job).strip() == str(len(huge)).encode()
    assert ended[bytes_job].state == JobState.SUCCEEDED
    assert log_of(bytes_job) == b"caf\xe9-\xff"
    assert ended[missing_job].state == JobState.FAILED
    assert b"cannot start 'no-such-command-gridshift': No such file or directory" in log_of(
        missing_job)
    assert "could not be started" in (ended[missing_job].end_reason or "")
    assert ended[chatty_job].state == JobState.SUCCEEDED
    chatty_log = log_of(chatty_job)
    assert len(chatty_log) < 4096 + 200
    assert chatty_log.rstrip().endswith(b"further output is discarded")
    stubborn = ended[stubborn_job]
    assert stubborn.state == JobState.CANCELLED
    assert stubborn.cancel_requested_at is not None and stubborn.ended_at is not None
    assert stubborn.ended_at - stubborn.cancel_requested_at >= timedelta(seconds=2)
    assert stubborn.exit_code == -9
    assert "SIGKILL" in daemon.output()
    # `show` prints the command's original bytes, and `--json` escapes them.
    shown = subprocess.run([*workspace_command(ws), "show", str(bytes_job)], env=ws.env,
                           capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert b"caf\xe9-\xff" in shown.stdout
    assert ws.cli("show", "--json", str(bytes_job)).json()["argv"][-1] == "caf\udce9-\udcff"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_drops_the_output_but_not_the_job(tmp_path: Path) -> None:
    """The wrapper's log is /dev/full (every write fails with ENOSPC): the job still runs
    to its end and its exit status is recorded."""
    status_path = tmp_path / "job-1.status"
    with open("/dev/full", "wb") as full:
        wrapper = start_wrapper(tmp_path / "job-1", [
            "sh", "-c", "head -c 1000000 /dev/zero; echo done > finished; exit 3"],
            tmp_path, full)
    assert wrapper.wait(60) == 3
    assert (tmp_path / "finished").read_text() == "done\n"
    assert json.loads(status_path.read_text())["exit_code"] == 3


def test_a_job_ends_when_its_command_exits_not_when_its_leftovers_do(tmp_path: Path) -> None:
    """A job that leaves a process in the background holding its output ends when its
    command exits; what the leftover prints later still reaches the log."""
    status_path = tmp_path / "job-1.status"
    log_path = tmp_path / "job-1.log"
    with log_path.open("wb") as log:
        wrapper = start_wrapper(tmp_path / "job-1", [
            "sh", "-c", "(sleep 6; echo late) & echo main done; exit 4"], tmp_path, log)
    try:
        wait_for(status_path.exists, timeout=5, what="the status of the ended command")
        assert json.loads(status_path.read_text())["exit_code"] == 4
        assert log_path.read_bytes() == b"main done\n"
        assert wrapper.poll() is None  # still copying the leftover's output
        assert wrapper.wait(timeout=30) == 4
        assert log_path.read_bytes() == b"main done\nlate\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.wait()


def test_json_output_never_holds_nan_or_infinity(capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever reaches the one JSON formatter, what it prints is JSON: null for unknown."""
    from scheduler import render

    render.print_json({"saved_g": float("nan"), "rows": [1.5, float("inf"), (float("-inf"),)]})
    printed = json.loads(capsys.readouterr().out, parse_constant=_refuse)
    assert printed == {"saved_g": None, "rows": [1.5, None, [None]]}
