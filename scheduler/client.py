"""Talk to a running daemon over its local API (HTTP+JSON on a Unix socket).

The CLI's side of ``api.py``: build an ApiRequest, send it, get an ApiResponse back, or
None where no daemon listens (the CLI then calls ``api.handle_local`` in-process). Kept
light on purpose: ``submit`` through a daemon must start fast, so nothing here imports
SQLAlchemy, numpy, pandas, requests or rich (tests/test_api.py checks ``sys.modules``).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import pwd
import socket
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, urlencode

from scheduler.config import SYSTEM_SOCKET, default_socket_path, find_config_path
from scheduler.errors import GridshiftError, PermissionDenied
from scheduler.records import ApiRequest, ApiResponse

# Long enough for a large report built by the daemon; a hung daemon still ends the wait.
DEFAULT_TIMEOUT_S = 300.0
# A streamed answer is read in pieces of at most this size.
STREAM_READ_BYTES = 1 << 20
# The Host header of every request (curl's examples use the same name).
HOST = "gridshift"
BUSY_RETRY_S = 0.01


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection whose transport is a Unix stream socket."""

    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__(HOST, timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        give_up = time.monotonic() + (self.timeout or DEFAULT_TIMEOUT_S)
        while True:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.settimeout(self.timeout)
                connection.connect(str(self.socket_path))
            except BlockingIOError:
                # The daemon's accept queue is full (a burst of clients): wait a little.
                connection.close()
                if time.monotonic() > give_up:
                    raise
                time.sleep(BUSY_RETRY_S)
                continue
            except BaseException:
                connection.close()
                raise
            self.sock = connection
            return


def send(socket_path: Path, request: ApiRequest,
         timeout: float = DEFAULT_TIMEOUT_S, stream: bool = False) -> ApiResponse | None:
    """Send ``request`` to the daemon at ``socket_path`` and return its answer.

    None when no daemon listens there (no socket file, or one a killed daemon left).
    PermissionDenied when the socket belongs to a user this caller may not reach;
    GridshiftError when the daemon accepts the request but fails to answer it. With
    ``stream``, a successful answer's body comes as ``chunks``, read as they arrive.
    """
    connection = _UnixConnection(socket_path, timeout)
    streaming = False
    try:
        try:
            connection.connect()
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None
        except PermissionError:
            raise PermissionDenied(_not_yours(socket_path)) from None
        except OSError as error:
            if error.errno in (errno.ENOTSOCK, errno.ECONNREFUSED, errno.ENOENT):
                return None
            raise GridshiftError(f"cannot connect to the gridshift daemon at {socket_path}: "
                                 f"{error.strerror or error}") from None
        body = None if request.body is None else json.dumps(request.body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            try:
                connection.request(request.method, target(request), body=body,
                                   headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the body was read (too large): its answer is there
            answer = connection.getresponse()
            content_type = answer.getheader("Content-Type") or "application/octet-stream"
            if stream and answer.status < 400:
                streaming = True
                return ApiResponse(answer.status, content_type,
                                   chunks=_chunks(answer, connection, socket_path))
            content = answer.read()
        except (OSError, http.client.HTTPException) as error:
            raise GridshiftError(f"the gridshift daemon at {socket_path} failed to answer: "
                                 f"{_describe(error)}") from None
        return ApiResponse(answer.status, content_type, content)
    finally:
        if not streaming:
            connection.close()


def _chunks(answer: http.client.HTTPResponse, connection: http.client.HTTPConnection,
            socket_path: Path) -> Iterator[bytes]:
    """A streamed answer's body as it arrives; the connection closes at its end."""
    try:
        while chunk := answer.read1(STREAM_READ_BYTES):
            yield chunk
        if answer.length:  # fewer bytes than Content-Length said
            raise GridshiftError(f"the gridshift daemon at {socket_path} stopped answering "
                                 f"midway")
    except (OSError, http.client.HTTPException) as error:
        raise GridshiftError(f"the gridshift daemon at {socket_path} failed to answer: "
                             f"{_describe(error)}") from None
    finally:
        connection.close()


def target(request: ApiRequest) -> str:
    """The request line's target: the path, then the query's values URL-encoded."""
    path = quote(request.path, safe="/")
    if not request.query:
        return path
    return f"{path}?{urlencode(request.query, doseq=True)}"


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _not_yours(socket_path: Path) -> str:
    """One line naming the socket and whose it is (or whose directory hides it)."""
    for candidate in (socket_path, *socket_path.parents):
        try:
            owner_uid = candidate.stat().st_uid
        except OSError:
            continue
        try:
            owner = pwd.getpwuid(owner_uid).pw_name
        except KeyError:
            owner = f"uid {owner_uid}"
        where = "" if candidate == socket_path else f" (in {candidate})"
        return (f"permission denied on the gridshift socket {socket_path}{where}: it belongs "
                f"to {owner}'s daemon, which accepts only {owner}'s requests")
    return f"permission denied on the gridshift socket {socket_path}"


def configured_socket(explicit_config: str | None,
                      environ: Mapping[str, str] | None = None) -> Path | None:
    """``[daemon] socket`` of the config file this command would use, or None.

    Reads only that key: a system config at 0600 root that this user cannot read, or a
    file the full loader would refuse, still lets the command find the socket (the
    daemon holds the config then). None where the file sets no socket or cannot be read.
    """
    env = os.environ if environ is None else environ
    path = find_config_path(explicit_config, env)
    if path is None:
        return None
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    daemon = raw.get("daemon")
    value = daemon.get("socket") if isinstance(daemon, dict) else None
    return Path(value) if isinstance(value, str) and value.startswith("/") else None


def candidate_sockets(explicit_config: str | None,
                      environ: Mapping[str, str] | None = None) -> list[Path]:
    """The sockets a command tries, in order: the configured one alone if the config sets
    one; else this user's own daemon's, then the system daemon's."""
    configured = configured_socket(explicit_config, environ)
    if configured is not None:
        return [configured]
    own = default_socket_path(os.getuid(), environ)
    return [s for s in dict.fromkeys((own, SYSTEM_SOCKET)) if _trusted_directory(s.parent)]


def _trusted_directory(directory: Path) -> bool:
    """Not a directory another user made (say /tmp/gridshift-UID before this user's
    daemon did): whoever owns it could put their own socket there and read the
    environment a submit sends."""
    try:
        owner = directory.stat().st_uid
    except OSError:
        return True  # nothing there (yet): send() finds no daemon
    return owner in (0, os.getuid())


def send_first(sockets: list[Path], request: ApiRequest,
               timeout: float = DEFAULT_TIMEOUT_S, stream: bool = False) -> ApiResponse | None:
    """Send to the first of ``sockets`` where a daemon listens; None where none does."""
    for socket_path in sockets:
        response = send(socket_path, request, timeout, stream)
        if response is not None:
            return response
    return None
