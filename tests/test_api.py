"""The local API on a real Unix socket: routes, bad input and faults, peer credentials of
real users, and the real daemon process serving curl and many concurrent clients."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler import client
from scheduler.api import ApiServer, SocketUnusable, handle_local
from scheduler.errors import GridshiftError, PermissionDenied
from scheduler.models import JobState
from scheduler.records import ApiRequest, ApiResponse, SubmitRequest
from tests.conftest import Workspace, floor_hour, hourly
from tests.daemon_process import (
    DaemonProcess,
    reap_daemons,  # noqa: F401 (autouse: kills leftovers)
    wait_for,
)

HOUR = timedelta(hours=1)
REPO = Path(__file__).resolve().parent.parent
IDLE_TIMEOUT_S = 1.0


@pytest.fixture
def workspace(csv_workspace: Callable[..., Workspace]) -> Workspace:
    first = floor_hour(datetime.now(UTC)) - 2 * HOUR
    return csv_workspace({"a": hourly(first, [300.0] * 4 + [40.0] * 2 + [300.0] * 40),
                          "b": hourly(first, [200.0] * 46)}, slots=2)


def short_socket_path() -> Path:
    """A socket path well under the ~100 bytes a Unix socket allows."""
    return Path(tempfile.mkdtemp(prefix="gs-")) / "api.sock"


@pytest.fixture
def serve(workspace: Workspace) -> Iterator[Callable[..., ApiServer]]:
    """Start real ApiServers on the workspace's store; each is stopped after the test."""
    started: list[ApiServer] = []
    stores = []

    def start(socket_path: Path | None = None, **options: Any) -> ApiServer:
        store = workspace.store()
        stores.append(store)
        options.setdefault("idle_timeout_s", IDLE_TIMEOUT_S)
        server = ApiServer(socket_path or short_socket_path(), store, workspace.config(),
                           **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for store in stores:
        store.close()


def submit_body(now: datetime, **changes: Any) -> dict[str, Any]:
    request = SubmitRequest(argv=["sh", "-c", "true"], duration_s=3600, not_before=now,
                            deadline=now + 24 * HOUR, cwd="/tmp", umask=0o022,
                            environment={"PATH": "/usr/bin", "SECRET": "s3cret"})
    return {**request.as_json(), **changes}


def send(server: ApiServer, method: str, path: str, body: Any = None,
         **query: list[str]) -> ApiResponse:
    response = client.send(server.socket_path, ApiRequest(method, path, query, body))
    assert response is not None
    return response


def raw_exchange(socket_path: Path, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are and read the answer until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(socket_path))
        try:
            connection.sendall(data)
        except BrokenPipeError:
            pass
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def job_count(workspace: Workspace) -> int:
    store = workspace.store()
    try:
        return len(store.list_jobs())
    finally:
        store.close()


# Routes ------------------------------------------------------------------------------


def test_submit_list_show_and_cancel_through_the_socket(
        serve: Callable[..., ApiServer], workspace: Workspace) -> None:
    server = serve()
    now = datetime.now(UTC)
    created = send(server, "POST", "/jobs", submit_body(now, name="train"))
    assert created.status == 201, created.body
    job = created.document()
    assert job["name"] == "train" and job["state"] == "planned"
    assert "s3cret" not in created.body.decode()

    listed = send(server, "GET", "/jobs").document()
    assert [j["id"] for j in listed] == [job["id"]]
    assert send(server, "GET", "/jobs", state=["succeeded"]).document() == []

    shown = send(server, "GET", f"/jobs/{job['id']}")
    assert [e["new_state"] for e in shown.document()["events"]] == ["queued", "planned"]
    assert shown.document()["environment_names"] == ["PATH", "SECRET"]
    assert "s3cret" not in shown.body.decode()

    cancelled = send(server, "POST", f"/jobs/{job['id']}/cancel")
    assert cancelled.status == 200
    assert cancelled.document()["state"] == "cancelled"
    store = workspace.store()
    assert store.get_job(job["id"]).state == JobState.CANCELLED
    store.close()
    # Finished jobs only with all=1.
    assert send(server, "GET", "/jobs").document() == []
    assert [j["id"] for j in send(server, "GET", "/jobs", all=["1"]).document()] == [job["id"]]


def test_an_array_is_submitted_and_cancelled_in_one_call(
        serve: Callable[..., ApiServer]) -> None:
    server = serve()
    now = datetime.now(UTC)
    created = send(server, "POST", "/jobs", submit_body(now, array=[0, 1, 5]))
    assert created.status == 201, created.body
    document = created.document()
    assert len(document["jobs"]) == 3 and isinstance(document["array_id"], int)

    cancelled = send(server, "POST", f"/arrays/{document['array_id']}/cancel").document()
    assert cancelled["array_id"] == document["array_id"]
    assert sorted(c["job_id"] for c in cancelled["cancelled"]) == sorted(document["jobs"])
    assert {c["state"] for c in cancelled["cancelled"]} == {"cancelled"}


def test_plan_status_forecast_and_report(serve: Callable[..., ApiServer]) -> None:
    server = serve()
    now = datetime.now(UTC)
    refreshed = send(server, "POST", "/forecast/refresh", {"regions": ["a", "b"]})
    assert refreshed.status == 200, refreshed.body
    assert {r["zone"] for r in refreshed.document()["refresh"]} == {"a", "b"}

    forecast = send(server, "GET", "/forecast", region=["b"]).document()
    assert [r["region"] for r in forecast["regions"]] == ["b"]
    assert "refresh" not in forecast

    plan = send(server, "POST", "/plan", {"duration_s": 3600,
                                          "deadline": (now + 12 * HOUR).isoformat()})
    assert plan.status == 200, plan.body
    best = plan.document()["options"][0]
    assert best["region"] == "a" and best["intensity"] == pytest.approx(40.0)

    status = send(server, "GET", "/status").document()
    assert status["healthy"] is False  # no daemon ticks in this test
    assert status["queue"]["planned"] == 0

    csv = send(server, "GET", "/report", format=["csv"])
    assert csv.status == 200 and csv.content_type.startswith("text/csv")
    assert csv.body.decode().splitlines()[0].startswith("id,")
    as_json = send(server, "GET", "/report", format=["json"])
    assert as_json.document()["jobs"] == []
    unknown = send(server, "GET", "/report", format=["pdf"])
    assert unknown.status == 400 and unknown.document()["exit_code"] == 2


def test_the_cli_path_without_a_daemon_uses_the_same_router(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    response = handle_local(workspace.config(), ApiRequest("POST", "/jobs", {},
                                                           submit_body(now)), now)
    assert response.status == 201
    store = workspace.store()
    job = store.get_job(response.document()["id"])
    assert job.owner_uid == os.getuid()
    store.close()


# Bad input and faults ----------------------------------------------------------------


def test_bad_requests_get_one_line_errors_and_write_nothing(
        serve: Callable[..., ApiServer], workspace: Workspace) -> None:
    server = serve()
    now = datetime.now(UTC)
    cases = [
        (send(server, "GET", "/nowhere"), 404, 2),
        (send(server, "DELETE", "/jobs"), 405, 2),
        (send(server, "GET", "/jobs/12345"), 404, 2),
        (send(server, "GET", "/jobs/99999999999999999999"), 404, 2),
        (send(server, "POST", "/jobs/99999999999999999999/cancel"), 404, 2),
        (send(server, "GET", "/jobs", limit=["many"]), 400, 2),
        (send(server, "GET", "/jobs", state=["sleeping"]), 400, 2),
        (send(server, "POST", "/jobs", {"argv": "not a list"}), 400, 2),
        (send(server, "POST", "/jobs", submit_body(now, regions=["mars"])), 400, 2),
        (send(server, "POST", "/plan", {"duration_s": -5}), 400, 2),
    ]
    for response, status, exit_code in cases:
        document = response.document()
        assert (response.status, document["exit_code"]) == (status, exit_code), document
        assert "\n" not in document["error"]
    malformed = raw_exchange(server.socket_path,
                             b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n"
                             b"{not json")
    assert malformed.startswith(b"HTTP/1.1 400")
    assert json.loads(malformed.split(b"\r\n\r\n", 1)[1])["exit_code"] == 2
    assert job_count(workspace) == 0


def test_a_failure_inside_the_daemon_is_500_one_line_and_it_keeps_serving(
        serve: Callable[..., ApiServer], workspace: Workspace,
        caplog: pytest.LogCaptureFixture) -> None:
    server = serve()
    with sqlite3.connect(workspace.db_path) as connection:
        connection.execute("ALTER TABLE jobs RENAME TO jobs_elsewhere")
    with caplog.at_level(logging.ERROR, logger="gridshift.api"):
        broken = send(server, "GET", "/jobs")
    assert broken.status == 500
    assert broken.document() == {"error": "database error: no such table: jobs",
                                 "exit_code": 1}
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None  # the traceback, once, in the daemon's log
    assert send(server, "GET", "/forecast").status == 200


def test_a_body_over_one_mib_gets_413_and_the_server_keeps_serving(
        serve: Callable[..., ApiServer], workspace: Workspace) -> None:
    server = serve()
    huge = {"argv": ["x" * (2 << 20)]}
    response = send(server, "POST", "/jobs", huge)
    assert response.status == 413 and response.document()["exit_code"] == 2
    # Announced but never sent: refused on the header alone.
    answer = raw_exchange(server.socket_path, b"POST /jobs HTTP/1.1\r\nHost: x\r\n"
                                              b"Content-Length: 5000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    assert send(server, "GET", "/jobs").status == 200
    assert job_count(workspace) == 0


def test_malformed_http_gets_400_and_the_server_keeps_serving(
        serve: Callable[..., ApiServer]) -> None:
    server = serve()
    answer = raw_exchange(server.socket_path, b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["exit_code"] == 2
    assert send(server, "GET", "/jobs").status == 200


def test_a_silent_client_is_dropped_while_others_are_served(
        serve: Callable[..., ApiServer]) -> None:
    server = serve()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.settimeout(30)  # far beyond the server's 1 s: the server must end it
        silent.connect(str(server.socket_path))
        assert send(server, "GET", "/jobs").status == 200  # served meanwhile
        assert silent.recv(1024) == b""  # closed by the server, no answer
    # A client that dribbles a byte at a time never completes its request either.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dribbler:
        dribbler.connect(str(server.socket_path))
        request = b"GET /jobs HTTP/1.1\r\nHost: gridshift\r\nX-Slow: " + b"y" * 10_000
        closed = threading.Event()

        def drip() -> None:
            for byte in request:
                if closed.wait(0.05):
                    return
                try:
                    dribbler.send(bytes([byte]))
                except OSError:
                    return

        writer = threading.Thread(target=drip)
        writer.start()
        dribbler.settimeout(60)
        try:
            assert dribbler.recv(1024) == b""
        finally:
            closed.set()
            writer.join()
    assert send(server, "GET", "/jobs").status == 200


def test_a_stale_socket_is_replaced_and_a_live_one_refuses_a_second_server(
        serve: Callable[..., ApiServer]) -> None:
    path = short_socket_path()
    path.parent.mkdir(exist_ok=True)
    left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_behind.bind(str(path))
    left_behind.close()  # the file stays, nobody listens: as after a SIGKILL
    assert client.send(path, ApiRequest("GET", "/jobs")) is None

    server = serve(path)
    assert send(server, "GET", "/jobs").status == 200
    with pytest.raises(SocketUnusable, match="another gridshift daemon is listening"):
        serve(path)
    assert send(server, "GET", "/jobs").status == 200
    server.stop()
    assert not path.exists()
    assert client.send(path, ApiRequest("GET", "/jobs")) is None


def test_the_client_finds_the_socket_without_reading_the_whole_config(
        tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text('[daemon]\nsocket = "/run/x/gs.sock"\n[providers]\nbad = 1\n',
                           encoding="utf-8")
    assert client.candidate_sockets(str(config_path), {}) == [Path("/run/x/gs.sock")]
    unreadable = tmp_path / "missing.toml"
    env = {"XDG_RUNTIME_DIR": "/run/user/4242"}
    expected_own = (Path("/run/gridshift/gridshift.sock") if os.getuid() == 0
                    else Path("/run/user/4242/gridshift/gridshift.sock"))
    assert client.candidate_sockets(str(unreadable), env)[0] == expected_own
    assert client.candidate_sockets(str(unreadable), env)[-1] == Path(
        "/run/gridshift/gridshift.sock")
    target = client.target(ApiRequest("GET", "/jobs", {"user": ["a b&c"], "state": ["x", "y"]}))
    assert target == "/jobs?user=a+b%26c&state=x&state=y"


def test_the_system_config_is_the_last_place_looked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler import config

    system = tmp_path / "etc-gridshift.toml"
    monkeypatch.setattr(config, "SYSTEM_CONFIG", system)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert config.find_config_path(None, env) is None
    system.write_text('[daemon]\nsocket = "/run/team/gs.sock"\n', encoding="utf-8")
    assert config.find_config_path(None, env) == system
    assert client.candidate_sockets(None, env) == [Path("/run/team/gs.sock")]
    own = tmp_path / "xdg" / "gridshift" / "config.toml"
    own.parent.mkdir(parents=True)
    own.write_text("", encoding="utf-8")
    assert config.find_config_path(None, env) == own


def test_a_daemon_that_fails_mid_request_is_one_line(tmp_path: Path) -> None:
    path = short_socket_path()
    path.parent.mkdir(exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def accept_and_hang_up() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    thread = threading.Thread(target=accept_and_hang_up)
    thread.start()
    with pytest.raises(GridshiftError, match="failed to answer") as raised:
        client.send(path, ApiRequest("GET", "/jobs"))
    assert "\n" not in str(raised.value)
    thread.join()
    listener.close()


def test_a_full_accept_queue_makes_the_client_wait_not_fail(
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = short_socket_path()
    path.parent.mkdir(exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    fillers = []
    while True:  # connect until the daemon-to-be's queue is full
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        try:
            filler.connect(str(path))
        except BlockingIOError:
            filler.close()
            break
        fillers.append(filler)
    refused: list[int] = []
    connect = socket.socket.connect

    def counting_connect(self: socket.socket, address: Any) -> None:
        try:
            connect(self, address)
        except BlockingIOError:
            refused.append(1)
            raise

    monkeypatch.setattr(socket.socket, "connect", counting_connect)
    answers: list[ApiResponse | None] = []
    sender = threading.Thread(target=lambda: answers.append(
        client.send(path, ApiRequest("GET", "/jobs"), timeout=30)))
    sender.start()
    wait_for(lambda: refused, what="the client to find the queue full")
    for _ in range(len(fillers) + 1):
        connection, _ = listener.accept()
        connection.settimeout(0.5)
        try:
            request = connection.recv(65536)
        except TimeoutError:
            connection.close()  # a filler: it never sends
            continue
        assert request.startswith(b"GET /jobs HTTP/1.1")
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 2\r\nConnection: close\r\n\r\n[]")
        connection.close()
        break
    sender.join()
    assert answers[0] is not None and answers[0].document() == []
    for filler in fillers:
        filler.close()
    listener.close()


# Identity from the operating system ----------------------------------------------------


@pytest.fixture
def other_user() -> Iterator[tuple[str, int]]:
    if os.geteuid() != 0:
        pytest.skip("creating a real user needs root")
    name = f"gsapi{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield name, int(subprocess.run(["id", "-u", name], check=True, capture_output=True,
                                       text=True).stdout)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def python_for(user: str) -> str:
    """An interpreter the user may run: the client needs only the standard library."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and subprocess.run(
                ["runuser", "-u", user, "--", candidate, "-c",
                 "import sys; assert sys.version_info >= (3, 11)"],
                capture_output=True).returncode == 0:
            return candidate
    pytest.skip(f"no Python 3.11+ that user {user} may run")


CLIENT_SCRIPT = """
import json, sys
from pathlib import Path
from scheduler import client
from scheduler.records import ApiRequest
try:
    response = client.send(Path(sys.argv[1]), ApiRequest(sys.argv[2], sys.argv[3], {},
                                                         json.loads(sys.argv[4])))
except Exception as error:
    print(json.dumps({"raised": type(error).__name__, "message": str(error)}))
else:
    print(json.dumps({"status": response.status, "body": response.document()}))
"""


def as_user(user: str, socket_path: Path, method: str, path: str, body: Any) -> Any:
    completed = subprocess.run(
        ["runuser", "-u", user, "--", python_for(user), "-c", CLIENT_SCRIPT,
         str(socket_path), method, path, json.dumps(body)],
        capture_output=True, text=True, timeout=60, cwd="/",
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_the_daemon_takes_the_callers_uid_from_the_socket(
        serve: Callable[..., ApiServer], other_user: tuple[str, int],
        workspace: Workspace) -> None:
    name, uid = other_user
    server = serve(daemon_uid=0)
    server.socket_path.parent.chmod(0o755)
    now = datetime.now(UTC)
    # The body claims root: the server ignores it and takes the peer's uid.
    answer = as_user(name, server.socket_path, "POST", "/jobs",
                     submit_body(now, owner_uid=0, owner_name="root"))
    assert answer["status"] == 201, answer
    store = workspace.store()
    job = store.get_job(answer["body"]["id"])
    store.close()
    assert (job.owner_uid, job.owner_name) == (uid, name)

    # Another user may not cancel it (exit 1), its owner may.
    mine = send(server, "POST", "/jobs", submit_body(now)).document()
    refused = as_user(name, server.socket_path, "POST", f"/jobs/{mine['id']}/cancel", None)
    assert refused["status"] == 403 and refused["body"]["exit_code"] == 1
    assert "belongs to root" in refused["body"]["error"]
    assert as_user(name, server.socket_path, "POST", f"/jobs/{job.id}/cancel",
                   None)["status"] == 200


def test_a_per_user_daemon_refuses_other_users_and_writes_nothing(
        serve: Callable[..., ApiServer], other_user: tuple[str, int],
        workspace: Workspace) -> None:
    name, uid = other_user
    # As if the daemon ran as the created user: root's request is someone else's.
    server = serve(daemon_uid=uid)
    assert server.socket_path.stat().st_mode & 0o777 == 0o600
    answer = send(server, "POST", "/jobs", submit_body(datetime.now(UTC)))
    assert answer.status == 403 and answer.document()["exit_code"] == 1
    assert answer.document()["error"] == (f"this gridshift daemon runs as {name} and accepts "
                                          f"only its own user's requests")
    assert job_count(workspace) == 0


def test_a_socket_the_caller_may_not_open_is_permission_denied_naming_its_owner(
        serve: Callable[..., ApiServer], other_user: tuple[str, int]) -> None:
    name, _uid = other_user
    server = serve(daemon_uid=0)
    server.socket_path.parent.chmod(0o755)
    server.socket_path.chmod(0o600)  # as a per-user daemon's socket is
    answer = as_user(name, server.socket_path, "GET", "/jobs", None)
    assert answer["raised"] == PermissionDenied.__name__
    assert str(server.socket_path) in answer["message"] and "root" in answer["message"]


def test_a_socket_directory_another_user_owns_is_refused(
        workspace: Workspace, other_user: tuple[str, int]) -> None:
    _name, uid = other_user
    directory = Path(tempfile.mkdtemp(prefix="gs-"))
    os.chown(directory, uid, -1)
    store = workspace.store()
    server = ApiServer(directory / "gs.sock", store, workspace.config())
    with pytest.raises(SocketUnusable, match="belongs to gsapi"):
        server.start()
    store.close()
    assert not (directory / "gs.sock").exists()


def test_the_client_skips_a_default_socket_directory_another_user_made(
        other_user: tuple[str, int]) -> None:
    name, uid = other_user
    runtime = Path(tempfile.mkdtemp(prefix="gs-"))
    runtime.chmod(0o755)
    (runtime / "gridshift").mkdir()
    os.chown(runtime / "gridshift", 65534, -1)  # nobody's, made before this user's daemon
    script = ("import json; from scheduler import client; "
              "print(json.dumps([str(p) for p in client.candidate_sockets(None)]))")

    def candidates() -> Any:
        completed = subprocess.run(
            ["runuser", "-u", name, "--", python_for(name), "-c", script],
            capture_output=True, text=True, timeout=60, cwd="/", check=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                 "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(runtime),
                 "HOME": f"/home/{name}"})
        return json.loads(completed.stdout)

    assert candidates() == ["/run/gridshift/gridshift.sock"]
    (runtime / "gridshift").rmdir()
    (runtime / "gridshift").mkdir()
    os.chown(runtime / "gridshift", uid, -1)  # the user's own: tried first
    assert candidates() == [str(runtime / "gridshift" / "gridshift.sock"),
                            "/run/gridshift/gridshift.sock"]


def test_a_config_the_user_cannot_read_still_leaves_the_default_sockets(
        other_user: tuple[str, int]) -> None:
    name, _uid = other_user
    directory = Path(tempfile.mkdtemp(prefix="gs-"))
    directory.chmod(0o755)
    secret = directory / "config.toml"
    secret.write_text('[daemon]\nsocket = "/run/elsewhere/gs.sock"\n', encoding="utf-8")
    secret.chmod(0o600)  # root's, as a system config holding provider tokens is
    script = ("import json, sys; from scheduler import client; "
              "print(json.dumps([str(p) for p in client.candidate_sockets(sys.argv[1])]))")
    completed = subprocess.run(
        ["runuser", "-u", name, "--", python_for(name), "-c", script, str(secret)],
        capture_output=True, text=True, timeout=60, cwd="/", check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": f"/home/{name}"})
    assert json.loads(completed.stdout)[-1] == "/run/gridshift/gridshift.sock"


# The real daemon ---------------------------------------------------------------------


@pytest.fixture
def daemon(workspace: Workspace) -> Iterator[DaemonProcess]:
    process = DaemonProcess(workspace)
    process.wait_started()
    socket_path = workspace.config().daemon.socket_path()
    wait_for(socket_path.exists, what="the daemon's socket")
    yield process
    assert process.stop() == 0
    assert not socket_path.exists()


def test_a_killed_daemons_socket_is_replaced_by_the_next_daemon(workspace: Workspace) -> None:
    socket_path = workspace.config().daemon.socket_path()
    first = DaemonProcess(workspace)
    first.wait_started()
    wait_for(socket_path.exists, what="the daemon's socket")
    first.kill()
    assert socket_path.exists()  # left behind: nobody removed it
    assert client.send(socket_path, ApiRequest("GET", "/jobs")) is None
    second = DaemonProcess(workspace)
    second.wait_started()
    response = wait_for(lambda: client.send(socket_path, ApiRequest("GET", "/status")),
                        what="the new daemon's answer")
    assert response is not None and response.document()["daemon"]["pid"] == second.pid
    assert second.stop() == 0
    assert not socket_path.exists()


def test_a_daemon_that_cannot_listen_says_so_in_one_line(workspace: Workspace) -> None:
    blocker = Path(tempfile.mkdtemp(prefix="gs-")) / "a-file"
    blocker.write_text("not a directory\n", encoding="utf-8")
    configured = workspace.config().daemon.socket_path()
    text = workspace.config_path.read_text(encoding="utf-8")
    workspace.config_path.write_text(
        text.replace(str(configured), str(blocker / "gs.sock")), encoding="utf-8")
    result = workspace.cli("daemon", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"gridshift: cannot listen on {blocker / 'gs.sock'}: {blocker} is "
                         f"not a directory"), result.stderr


def test_curl_lists_jobs_from_the_real_daemon(workspace: Workspace,
                                              daemon: DaemonProcess) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    socket_path = workspace.config().daemon.socket_path()
    created = client.send(socket_path, ApiRequest("POST", "/jobs", {},
                                                  submit_body(datetime.now(UTC))))
    assert created is not None and created.status == 201
    listed = subprocess.run(["curl", "--silent", "--fail", "--unix-socket", str(socket_path),
                             "http://gridshift/jobs"], capture_output=True, text=True,
                            timeout=30, check=True)
    assert [job["id"] for job in json.loads(listed.stdout)] == [created.document()["id"]]


def test_the_client_process_loads_no_orm_or_numerics(workspace: Workspace,
                                                     daemon: DaemonProcess) -> None:
    script = (
        "import json, sys\n"
        "from datetime import UTC, datetime, timedelta\n"
        "from pathlib import Path\n"
        "from scheduler import client\n"
        "from scheduler.records import ApiRequest, SubmitRequest\n"
        "now = datetime.now(UTC)\n"
        "request = SubmitRequest(['true'], 60, now, now + timedelta(hours=2), '/tmp', 18, {})\n"
        "response = client.send(Path(sys.argv[1]), ApiRequest('POST', '/jobs', {},"
        " request.as_json()))\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} &"
        " {'sqlalchemy', 'numpy', 'pandas', 'requests', 'rich'})\n"
        "print(json.dumps({'status': response.status, 'heavy': heavy}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(workspace.config().daemon.socket_path())],
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    assert json.loads(completed.stdout) == {"status": 201, "heavy": []}


SUBMIT_MANY = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from scheduler import client
from scheduler.records import ApiRequest, SubmitRequest
socket_path, slot, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
now = datetime.now(UTC)
ids, failures = [], []
for number in range(count):
    request = SubmitRequest(["true"], 3600, now, now + timedelta(hours=24), "/tmp", 0o022,
                            {"PATH": "/usr/bin"}, name=f"c{slot}-{number}")
    try:
        response = client.send(socket_path, ApiRequest("POST", "/jobs", {},
                                                       request.as_json()))
    except Exception as error:
        failures.append(f"{type(error).__name__}: {error}")
        continue
    if response is None or response.status != 201:
        failures.append(repr(response))
    else:
        ids.append(response.document()["id"])
print(json.dumps({"ids": ids, "failures": failures}))
"""


def test_eight_clients_submit_two_thousand_jobs_without_an_error(
        workspace: Workspace, daemon: DaemonProcess) -> None:
    """Eight client processes (as eight users' shells) submit 250 jobs each at once."""
    socket_path = workspace.config().daemon.socket_path()
    clients, each = 8, 250
    processes = [subprocess.Popen([sys.executable, "-c", SUBMIT_MANY, str(socket_path),
                                   str(slot), str(each)], stdout=subprocess.PIPE,
                                  text=True, cwd=REPO)
                 for slot in range(clients)]
    outcomes = [json.loads(process.communicate(timeout=600)[0]) for process in processes]
    assert [outcome["failures"] for outcome in outcomes] == [[]] * clients
    assert "api:" not in daemon.output()  # requests are logged at DEBUG only
    every_id = [job_id for outcome in outcomes for job_id in outcome["ids"]]
    assert len(set(every_id)) == clients * each
    assert job_count(workspace) == clients * each


def test_a_list_of_many_pages_streams_every_job_newest_first(
        workspace: Workspace, serve: Callable[..., ApiServer]) -> None:
    """12,000 jobs (three pages): `list --all --json` through the socket, read as it
    arrives, holds every job once, newest first, each as show --json has it, and is
    what the in-process path writes."""
    now = datetime.now(UTC)
    store = workspace.store()
    created = store.add_jobs(*_many_specs(workspace, now, 12_000), now, list(range(12_000)))
    store.close()
    server = serve()
    request = ApiRequest("GET", "/jobs", {"all": ["1"]})
    streamed = client.send(server.socket_path, request, stream=True)
    assert streamed is not None and streamed.chunks is not None
    pieces = list(streamed.chunks)
    assert len(pieces) > 1, "the answer came in one piece"
    listed = json.loads(b"".join(pieces))
    assert [job["id"] for job in listed] == [job.id for job in reversed(created)]
    shown = send(server, "GET", f"/jobs/{created[5].id}").document()
    assert listed[-6] == {key: shown[key] for key in listed[-6]}
    local = handle_local(workspace.config(), request, now)
    assert b"".join(pieces) == local.content()


def _many_specs(workspace: Workspace, now: datetime, count: int) -> tuple[list[Any], list[Any]]:
    from scheduler.records import NewJob
    from scheduler.store import PlanUpdate

    spec = NewJob(name="sweep", argv=["python", "train.py", "--lr", "0.1"], cwd="/tmp", env={},
                  duration_s=600, not_before=now, deadline=now + HOUR, regions=["a", "b"],
                  power_watts=100.0, owner_uid=os.getuid(), owner_name="tester")
    plan = PlanUpdate(0, "a", now, 300.0, now, 1)
    return [spec] * count, [plan] * count


def _answered_by_a_daemon_that_dies(workspace: Workspace, answer: bytes,
                                    *command: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI ``command`` against a fake daemon on the config's socket that sends
    ``answer`` (headers and part of a body) and then closes the connection."""
    path = short_socket_path()
    path.parent.mkdir(exist_ok=True)
    config = workspace.config_path.read_text(encoding="utf-8")
    old_socket = workspace.config().daemon.socket_path()
    workspace.config_path.write_text(config.replace(str(old_socket), str(path)),
                                     encoding="utf-8")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_half() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(answer)
        connection.close()

    thread = threading.Thread(target=answer_half)
    thread.start()
    result = workspace.cli(*command)
    thread.join()
    listener.close()
    return result


def test_a_list_the_daemon_cuts_short_is_a_failure_not_a_truncated_document(
        workspace: Workspace) -> None:
    """A daemon that dies while streaming `list --json`: the CLI exits 1 with one line,
    after the part it received."""
    result = _answered_by_a_daemon_that_dies(
        workspace, b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                   b"Connection: close\r\n\r\n[{\"id\":2},", "list", "--json")
    assert result.returncode == 1
    assert result.stdout.startswith('[{"id":2},')
    assert "cut short" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("form", ["--csv", "--json"])
def test_a_report_the_daemon_cuts_short_is_a_failure(workspace: Workspace, form: str) -> None:
    """A daemon that dies while streaming `report --csv` or `--json` (chunked: its last,
    empty chunk never comes): the CLI exits 1 with one line, after what it received."""
    result = _answered_by_a_daemon_that_dies(
        workspace, b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   b"8\r\nid,name\n\r\n", "report", form)  # a whole row: only chunks tell
    assert result.returncode == 1
    assert result.stdout == "id,name\n"
    assert result.stderr.count("\n") == 1
