"""The daemon's local API: HTTP+JSON on a Unix socket, routed to the use cases in jobs.py.

``handle`` is the router; both ways in call it: ``ApiServer`` (the daemon: the caller's uid
and gid from the socket's peer credentials) and ``handle_local`` (the CLI in-process where
no daemon listens: the caller's own uid). Every error is a JSON document
``{"error": "...", "exit_code": N}`` with the exit code the CLI gives it. README.md's
"Local API" section lists the endpoints.
"""

from __future__ import annotations

import errno
import io
import itertools
import json
import logging
import os
import pwd
import re
import socket
import socketserver
import sqlite3
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from scheduler import documents, jobs, render
from scheduler.config import Config
from scheduler.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    BadInput,
    GridshiftError,
    PermissionDenied,
    UnknownJob,
)
from scheduler.models import JobState
from scheduler.records import ApiRequest, ApiResponse, SubmitRequest
from scheduler.store import Store
from scheduler.timespec import check_fits, iso_utc, utc_now

if TYPE_CHECKING:  # numpy, which replanning loads, is for submit and plan only
    from scheduler.replanning import PlanCache

log = logging.getLogger("gridshift.api")

MAX_BODY_BYTES = 1 << 20
# A client that has not sent its whole request this long after connecting is dropped.
IDLE_TIMEOUT_S = 30.0
# How long a stopping daemon waits for the requests it is answering.
STOP_DRAIN_S = 5.0
# SQLite's INTEGER is 64-bit: a larger id names no job (and would overflow the driver).
MAX_ID = 2**63 - 1
JSON = "application/json"
REPORT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "json": JSON,
    "csv": "text/csv; charset=utf-8",
    "png": "image/png",
    "html": "text/html; charset=utf-8",
}
# matplotlib's pyplot keeps global state: one chart at a time in the daemon.
_charts = threading.Lock()


@dataclass(frozen=True)
class ApiContext:
    """What a request is answered with: who asks (never taken from the request), the
    store and config, and the one clock reading of this request."""

    store: Store
    config: Config
    caller: jobs.Caller
    now: datetime
    # The daemon's forecasts and planned slots in memory (None: read from the store).
    plan_cache: PlanCache | None = None


Route = Callable[[ApiRequest, ApiContext, str], ApiResponse]


class _NotAllowed(Exception):
    pass


def handle(request: ApiRequest, context: ApiContext) -> ApiResponse:
    """Answer one request; never raises. A GridshiftError becomes an error document with
    its exit code; anything else a 500 with one line (logged with its traceback)."""
    try:
        route, argument = _route(request.method, request.path)
        return route(request, context, argument)
    except _NotAllowed:
        return error_response(HTTPStatus.METHOD_NOT_ALLOWED,
                              f"{request.method} is not allowed on {request.path}",
                              EXIT_BAD_INPUT)
    except GridshiftError as error:
        return error_response(_status_of(error), str(error), error.exit_code)
    except Exception as error:
        log.exception("api: %s %s failed", request.method, request.path)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, _fault(error), EXIT_FAILURE)


def _fault(error: Exception) -> str:
    """One line for an unexpected failure: the driver's words for a database error (disk
    full, locked, unwritable), else the exception's type and first line."""
    cause: object = getattr(error, "orig", None)
    if isinstance(error, sqlite3.Error) or cause is None:
        cause = error
    psycopg = sys.modules.get("psycopg")  # loaded only where PostgreSQL is in use
    if isinstance(cause, sqlite3.Error) or (psycopg is not None
                                            and isinstance(cause, psycopg.Error)):
        return f"database error: {_first_line(cause)}"
    return f"internal error: {type(error).__name__}: {_first_line(error)}"


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def handle_local(config: Config, request: ApiRequest, now: datetime) -> ApiResponse:
    """The in-process way in, for the CLI where no daemon listens: the same ``handle`` on
    this process's own store, as this process's own user."""
    store = _StoreOnFirstUse(config.database_url)
    try:
        caller = jobs.Caller.from_ids(os.getuid(), os.getgid(), config)
        response = handle(request, ApiContext(cast(Store, store), config, caller, now))
    except BaseException:
        store.close()
        raise
    if response.chunks is None:
        store.close()
        return response
    return replace(response, chunks=_closing_after(response.chunks, store))


def _closing_after(chunks: Iterator[bytes], store: _StoreOnFirstUse) -> Iterator[bytes]:
    """A streamed body that closes the in-process store once it is read (it reads it)."""
    try:
        yield from chunks
    finally:
        store.close()


class _StoreOnFirstUse:
    """The in-process store, opened (the database created, migrated) only when a request
    first uses it: input refused before that leaves nothing on disk."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._store: Store | None = None

    def __getattr__(self, name: str) -> Any:
        if self._store is None:
            self._store = Store.open(self._url)
        return getattr(self._store, name)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def error_response(status: int, message: str, exit_code: int) -> ApiResponse:
    return json_response(status, {"error": message, "exit_code": exit_code})


def json_response(status: int, document: Any) -> ApiResponse:
    return ApiResponse(status, JSON, json.dumps(document).encode("utf-8"))


def _status_of(error: GridshiftError) -> int:
    if isinstance(error, UnknownJob | _UnknownEndpoint):
        return HTTPStatus.NOT_FOUND
    if isinstance(error, BadInput):
        return HTTPStatus.BAD_REQUEST
    if isinstance(error, PermissionDenied):
        return HTTPStatus.FORBIDDEN
    return HTTPStatus.CONFLICT


# Routes ------------------------------------------------------------------------------


def _submit(request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    try:
        submitted = SubmitRequest.from_json(request.body)
    except ValueError as error:
        raise BadInput(f"bad submit request: {error}") from None
    created = jobs.submit(context.store, context.config, context.caller, submitted,
                          context.now, context.plan_cache)
    if submitted.array is not None:
        return json_response(HTTPStatus.CREATED, {"array_id": created[0].array_id,
                                                  "jobs": [job.id for job in created]})
    return json_response(HTTPStatus.CREATED, render.job_json(created[0], context.config))


def _list(request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    states = []
    for value in request.query.get("state", []):
        try:
            states.append(JobState(value))
        except ValueError:
            raise BadInput(f"unknown state {value!r} (states: "
                           f"{', '.join(s.value for s in JobState)})") from None
    limit = _optional_int(request.query, "limit")
    if limit is not None and limit < 1:
        raise BadInput("limit must be a whole number above zero")
    query = jobs.JobQuery(states=states, user=_last(request.query, "user"),
                          uid=context.caller.uid if _flag(request.query, "mine") else None,
                          limit=limit)
    if _flag(request.query, "all"):
        query = replace(query, include_finished=True)
    pages = jobs.list_pages(context.store, query, render.DOCUMENT_COLUMNS)
    # The first page is read before answering: a database that fails at once (missing,
    # locked) gets an error answer, not a 200 cut short.
    first = next(pages, None)
    # Streamed: 100,000 job documents are encoded and sent a page at a time.
    return ApiResponse(HTTPStatus.OK, JSON, chunks=documents.json_array(
        render.document_columns(stored, context.config)
        for stored in itertools.chain([] if first is None else [first], pages)))


def _show(_request: ApiRequest, context: ApiContext, job_id: str) -> ApiResponse:
    detail = jobs.show(context.store, _job_id(job_id))
    return json_response(HTTPStatus.OK, render.show_json(
        detail.job, detail.events, context.config, detail.chunks, detail.runs))


def _cancel(_request: ApiRequest, context: ApiContext, job_id: str) -> ApiResponse:
    outcome = jobs.cancel(context.store, context.config, context.caller, _job_id(job_id),
                          context.now)
    return json_response(HTTPStatus.OK, _cancelled_json(outcome))


def _cancel_array(_request: ApiRequest, context: ApiContext, array_id: str) -> ApiResponse:
    number = int(array_id)
    if number > MAX_ID:
        raise BadInput(f"no array with id {number}")
    outcomes = jobs.cancel_array(context.store, context.config, context.caller, number,
                                 context.now)
    return json_response(HTTPStatus.OK, {"array_id": number,
                                         "cancelled": [_cancelled_json(o) for o in outcomes]})


def _cancelled_json(outcome: jobs.Cancelled) -> dict[str, Any]:
    return {"job_id": outcome.job_id, "state": outcome.state, "message": outcome.message}


def _plan(request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    body = _object(request.body)
    duration_s = body.get("duration_s")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s <= 0:
        raise BadInput("duration_s must be a whole number of seconds above zero")
    duration = timedelta(seconds=duration_s)
    not_before = max(context.now, _time(body.get("not_before"), "not_before", context.now))
    if body.get("deadline") is None:
        raise BadInput("deadline is required")
    deadline = _time(body["deadline"], "deadline", context.now)
    check_fits(not_before, duration, deadline)
    regions = jobs.preview_regions(context.config, _strings(body.get("regions"), "regions"))
    from scheduler import replanning

    preview = replanning.preview(context.store, context.config, duration, not_before, deadline,
                               regions, context.now)
    return json_response(HTTPStatus.OK, plan_document(preview, context.now))


def plan_document(preview: Any, now: datetime) -> dict[str, Any]:
    """What ``gridshift plan --json`` prints for a replanning.Preview."""
    from scheduler.timespec import from_epoch

    return {
        "now": iso_utc(now),
        "signal": preview.signal,
        "options": [
            {"region": o.region, "start": iso_utc(from_epoch(o.start)),
             "end": iso_utc(from_epoch(o.end)), "intensity": o.intensity,
             "covered": o.covered, "signal": preview.signal,
             "basis": preview.bases.get(o.region)}
            for o in preview.options
        ],
        "run_now": {"region": preview.run_now_region,
                    "intensity": preview.run_now_intensity},
        "saving_pct": preview.saving_pct,
        "left_out": preview.left_out,
    }


def _status(_request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    from scheduler import status

    report = status.gather(context.store, context.config, context.now)
    document = report.as_json()
    document["healthy"] = report.healthy
    return json_response(HTTPStatus.OK, document)


def _forecast(request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    regions = jobs.preview_regions(context.config, request.query.get("region"))
    return json_response(HTTPStatus.OK, _forecast_document(context, regions, None))


def _forecast_refresh(request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    body = {} if request.body is None else _object(request.body)
    regions = jobs.preview_regions(context.config, _strings(body.get("regions"), "regions"))
    from scheduler import forecasting

    results = forecasting.refresh_all(context.config, context.store, context.now, regions)
    # 200 even where every fetch failed: the answer is each zone's outcome, and the CLI
    # prints them all before it says so (exit 1).
    return json_response(HTTPStatus.OK, _forecast_document(context, regions, results))


def _forecast_document(context: ApiContext, regions: Sequence[str],
                       results: Sequence[Any] | None) -> dict[str, Any]:
    from scheduler import forecasting

    views = forecasting.region_views(context.config, context.store, regions, context.now)
    document: dict[str, Any] = {"regions": [view.as_json() for view in views]}
    if results is not None:
        document["refresh"] = [result.as_json() for result in results]
    return document


def _report(request: ApiRequest, context: ApiContext, _: str) -> ApiResponse:
    form = _last(request.query, "format") or "text"
    if form not in REPORT_TYPES:
        raise BadInput(f"unknown report format {form!r} (formats: {', '.join(REPORT_TYPES)})")
    since = _optional_time(request.query, "since", context.now)
    until = _optional_time(request.query, "until", context.now)
    if since is not None and until is not None and since >= until:
        raise BadInput("since must be before until")
    names = request.query.get("region")
    regions = jobs.preview_regions(context.config, names) if names else []
    from scheduler import report as reporting

    if form in ("json", "csv"):
        chunks = _report_chunks(context, since, until, regions, form)
        # The first piece is read before answering: a database that fails at once gets an
        # error answer, not a 200 cut short.
        first = next(chunks)
        return ApiResponse(HTTPStatus.OK, REPORT_TYPES[form],
                           chunks=itertools.chain([first], chunks))
    with reporting.build(context.store, context.config, since, until, regions) as built:
        if form in ("png", "html"):
            with _charts:
                data = (reporting.plot_png(built) if form == "png"
                        else reporting.html_report(built).encode("utf-8"))
            return ApiResponse(HTTPStatus.OK, REPORT_TYPES[form], data)
        body = io.BytesIO()
        out = io.TextIOWrapper(body, encoding="utf-8", newline="")
        reporting.write_text(built, out)
        out.flush()
    return ApiResponse(HTTPStatus.OK, REPORT_TYPES[form], body.getvalue())


def _report_chunks(context: ApiContext, since: datetime | None, until: datetime | None,
                   regions: list[str], form: str) -> Iterator[bytes]:
    """A JSON or CSV report's body a page of jobs at a time (100,000 jobs' objects are
    never held whole), over one read transaction held until the last piece."""
    from scheduler import report as reporting

    pieces = reporting.json_pieces if form == "json" else reporting.csv_pieces
    with reporting.build(context.store, context.config, since, until, regions) as built:
        for piece in pieces(built):
            yield piece.encode("utf-8")


ROUTES: list[tuple[str, re.Pattern[str], Route]] = [
    ("POST", re.compile(r"/jobs"), _submit),
    ("GET", re.compile(r"/jobs"), _list),
    ("GET", re.compile(r"/jobs/(\d+)"), _show),
    ("POST", re.compile(r"/jobs/(\d+)/cancel"), _cancel),
    ("POST", re.compile(r"/arrays/(\d+)/cancel"), _cancel_array),
    ("POST", re.compile(r"/plan"), _plan),
    ("GET", re.compile(r"/status"), _status),
    ("GET", re.compile(r"/forecast"), _forecast),
    ("POST", re.compile(r"/forecast/refresh"), _forecast_refresh),
    ("GET", re.compile(r"/report"), _report),
]


def _route(method: str, path: str) -> tuple[Route, str]:
    path_known = False
    for route_method, pattern, route in ROUTES:
        matched = pattern.fullmatch(path.rstrip("/") or "/")
        if matched is None:
            continue
        if route_method == method:
            return route, matched.group(1) if pattern.groups else ""
        path_known = True
    if path_known:
        raise _NotAllowed
    raise _UnknownEndpoint(f"no such endpoint: {method} {path}")


class _UnknownEndpoint(BadInput):
    pass


# Reading a request's values ----------------------------------------------------------


def _job_id(text: str) -> int:
    number = int(text)
    if number > MAX_ID:
        raise UnknownJob(number)
    return number


def _last(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _flag(query: Mapping[str, Sequence[str]], name: str) -> bool:
    value = _last(query, name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes", ""):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise BadInput(f"{name} must be 1 or 0, not {value!r}")


def _optional_int(query: Mapping[str, Sequence[str]], name: str) -> int | None:
    value = _last(query, name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadInput(f"{name} must be a whole number, not {value!r}")
    return int(value)


def _optional_time(query: Mapping[str, Sequence[str]], name: str,
                   now: datetime) -> datetime | None:
    value = _last(query, name)
    return None if value is None else _time(value, name, now)


def _time(value: Any, name: str, now: datetime) -> datetime:
    """An ISO-8601 time with its UTC offset; None (absent) is ``now``."""
    if value is None:
        return now
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be an ISO-8601 time, not {value!r}") from None
    if parsed.tzinfo is None:
        raise BadInput(f"{name} must carry a UTC offset: {value!r}")
    return parsed.astimezone(UTC)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def _strings(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{name} must be a list of strings")
    return value


# The server ---------------------------------------------------------------------------


class SocketUnusable(GridshiftError):
    """Another daemon answers on the socket, or its path cannot be listened on."""


def foreign_caller(daemon_uid: int, caller_uid: int) -> ApiResponse | None:
    """A daemon not running as root serves only its own user: 403 for anyone else."""
    if daemon_uid == 0 or caller_uid == daemon_uid:
        return None
    return error_response(HTTPStatus.FORBIDDEN,
                          f"this gridshift daemon runs as {_user_name(daemon_uid)} and "
                          f"accepts only its own user's requests", EXIT_FAILURE)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class ApiServer:
    """The local API on a Unix socket, one thread per connection, one request each.

    ``start`` binds (replacing a socket a killed daemon left; refusing one that answers)
    and serves in a background thread; ``stop`` stops and removes the socket.
    """

    def __init__(self, socket_path: Path, store: Store, config: Config, *,
                 clock: Callable[[], datetime] = utc_now, daemon_uid: int | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_body_bytes: int = MAX_BODY_BYTES,
                 plan_cache: PlanCache | None = None) -> None:
        self.socket_path = socket_path
        self.plan_cache = plan_cache
        self.store = store
        self.config = config
        self.clock = clock
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
        self.idle_timeout_s = idle_timeout_s
        self.max_body_bytes = max_body_bytes
        self._server: _UnixHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None
        self._in_flight = 0
        self._requests_done = threading.Condition()

    def start(self) -> None:
        path = self.socket_path
        private = self.daemon_uid != 0
        try:
            if not path.parent.is_dir():
                if path.parent.exists():
                    raise SocketUnusable(f"cannot listen on {path}: {path.parent} is not a "
                                         f"directory")
                path.parent.mkdir(parents=True, mode=0o700 if private else 0o755)
                path.parent.chmod(0o700 if private else 0o755)
            owner = path.parent.stat().st_uid
            if owner not in (0, os.geteuid()):
                # Whoever owns the directory could swap the socket for their own.
                raise SocketUnusable(f"cannot listen on {path}: {path.parent} belongs to "
                                     f"{_user_name(owner)}, not to this daemon's user")
            self._clear_stale()
            server = _UnixHTTPServer(str(path), _Handler, bind_and_activate=False)
            server.api = self
            try:
                server.server_bind()
                path.chmod(0o600 if private else 0o666)
                server.server_activate()
            except BaseException:
                server.server_close()
                raise
        except OSError as error:
            raise SocketUnusable(f"cannot listen on {path}: {error.strerror or error}") from None
        self._inode = path.stat().st_ino
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.5}, name="gridshift-api", daemon=True)
        self._thread.start()
        log.info("local API listening on %s", path)

    def _clear_stale(self) -> None:
        path = self.socket_path
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise SocketUnusable(f"cannot listen on {path}: it exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(2.0)
            probe.connect(str(path))
        except ConnectionRefusedError:
            log.info("removing the socket a stopped daemon left: %s", path)
            path.unlink(missing_ok=True)
            return
        except OSError as error:
            if error.errno != errno.ECONNREFUSED:
                raise
            path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise SocketUnusable(f"another gridshift daemon is listening on {path}; stop it first "
                          f"or give this one another [daemon] socket")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._requests_done:  # a submit in flight gets its answer, not a hang-up
            if not self._requests_done.wait_for(lambda: self._in_flight == 0, STOP_DRAIN_S):
                log.warning("api: stopping with %d request(s) unanswered", self._in_flight)
        server.server_close()
        try:  # only our own socket: a newer daemon may have replaced it
            if self.socket_path.stat().st_ino == self._inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request being answered, for ``stop`` to wait on."""
        with self._requests_done:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._requests_done:
                self._in_flight -= 1
                self._requests_done.notify_all()

    def answer(self, request: ApiRequest, uid: int, gid: int) -> ApiResponse:
        refused = foreign_caller(self.daemon_uid, uid)
        if refused is not None:
            log.warning("api: refused %s %s from uid %d: not this daemon's user",
                        request.method, request.path, uid)
            return refused
        caller = jobs.Caller.from_ids(uid, gid, self.config)
        response = handle(request, ApiContext(self.store, self.config, caller, self.clock(),
                                              plan_cache=self.plan_cache))
        log.debug("api: uid %d %s %s -> %d", uid, request.method, request.path,
                  response.status)
        return response


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    api: ApiServer


class _Handler(BaseHTTPRequestHandler):
    """One request per connection. The peer's uid and gid come from SO_PEERCRED."""

    server: _UnixHTTPServer
    protocol_version = "HTTP/1.1"
    peer: tuple[int, int] = (-1, -1)

    def setup(self) -> None:
        super().setup()
        api = self.server.api
        self.connection.settimeout(api.idle_timeout_s)
        credentials = self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                 struct.calcsize("3i"))
        _pid, uid, gid = struct.unpack("3i", credentials)
        self.peer = (uid, gid)
        # A client that dribbles its request byte by byte resets the per-read timeout;
        # this ends the whole read once the deadline passes.
        self._reading = True
        self._dropped = False
        self._guard = threading.Lock()
        self._deadline = threading.Timer(api.idle_timeout_s, self._drop)
        self._deadline.daemon = True
        self._deadline.start()

    def _drop(self) -> None:
        with self._guard:
            if not self._reading:
                return
            self._dropped = True
            log.warning("api: dropped a client (uid %d) that sent no whole request in %.0f s",
                        self.peer[0], self.server.api.idle_timeout_s)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _request_read(self) -> bool:
        """Stop the deadline; False where it already dropped the client."""
        self._deadline.cancel()
        with self._guard:
            self._reading = False
            return not self._dropped

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:  # answered 405 (or 404) by the router, like any wrong method
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        self.close_connection = True
        api = self.server.api
        body, refusal = self._read_body(api.max_body_bytes)
        if not self._request_read():
            return
        if refusal is not None:
            log.warning("api: %s %s from uid %d: %s", self.command, self.path, self.peer[0],
                        refusal.document()["error"])
            self._write(refusal)
            return
        split = urlsplit(self.path)
        request = ApiRequest(self.command, unquote(split.path),
                             parse_qs(split.query, keep_blank_values=True), body)
        with api.in_flight():
            self._write(api.answer(request, *self.peer))

    def _read_body(self, limit: int) -> tuple[Any, ApiResponse | None]:
        if self.headers.get("Transfer-Encoding"):
            return None, error_response(HTTPStatus.LENGTH_REQUIRED, "send the body with a "
                                        "Content-Length, not chunked", EXIT_BAD_INPUT)
        length_text = self.headers.get("Content-Length") or "0"
        if not length_text.isdigit():
            return None, error_response(HTTPStatus.BAD_REQUEST, "bad Content-Length",
                                        EXIT_BAD_INPUT)
        length = int(length_text)
        if length > limit:
            return None, error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                        f"request body over {limit} bytes", EXIT_BAD_INPUT)
        if length == 0:
            return None, None
        raw = self.rfile.read(length)
        if len(raw) < length:
            return None, error_response(HTTPStatus.BAD_REQUEST, "request body cut short",
                                        EXIT_BAD_INPUT)
        try:
            return json.loads(raw.decode("utf-8")), None
        except (UnicodeDecodeError, ValueError) as error:
            return None, error_response(HTTPStatus.BAD_REQUEST,
                                        f"malformed JSON body: {error}", EXIT_BAD_INPUT)

    def _write(self, response: ApiResponse) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            if response.chunks is None:
                self.send_header("Content-Length", str(len(response.body)))
            else:  # a body cut short then lacks the last, empty chunk: clients see it
                self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            if response.chunks is None:
                self.wfile.write(response.body)
                return
            for chunk in response.chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError as error:  # the client left before its answer
            log.warning("api: could not answer %s %s: %s", self.command, self.path, error)
        except Exception:  # a streamed body failed midway: the client sees it cut short
            log.exception("api: %s %s failed while answering", self.command, self.path)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Malformed HTTP (bad request line, headers too long, unknown method): a JSON
        error like every other, then the connection closes."""
        self.close_connection = True
        if not self._request_read():
            return
        self.request_version = self.protocol_version  # else an HTTP/0.9 answer: no headers
        status = HTTPStatus(code)
        text = message or status.phrase
        log.warning("api: malformed request from uid %d: %d %s", self.peer[0], code, text)
        self._write(error_response(code, f"malformed request: {text}", EXIT_BAD_INPUT))

    def log_error(self, format: str, *args: Any) -> None:
        """http.server's own faults (a client that timed out): one line at WARNING."""
        log.warning("api: uid %d: %s", self.peer[0], format % args)

    def log_message(self, format: str, *args: Any) -> None:
        """http.server writes every request to stderr; ``answer`` logs them at DEBUG."""
