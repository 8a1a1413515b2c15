"""The provider interface, and the HTTP plumbing every web provider shares.

A provider turns one forecast service into ``PointRecord`` lists. Each provider module
keeps three things apart: building the request (pure), parsing and validating the
payload (pure, testable from a saved file) and the single HTTP call (``get_json`` here).
"""

from __future__ import annotations

import email.utils
import functools
import inspect
import itertools
import json
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, Self, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.util.retry import Retry

from scheduler.config import ProviderConfig
from scheduler.errors import GridshiftError
from scheduler.records import PointRecord
from scheduler.units import GRAMS_PER_KWH, PERCENTILE

# urllib3 honours Retry-After up to six hours by default; a refresh must not hang that long.
# A server asking for a longer wait than this gets no retry at all: the next refresh retries.
MAX_RETRY_AFTER_S = 30.0
CONNECT_TIMEOUT_S = 5.0
# An answer's body must be complete within the provider's timeout plus this.
DEADLINE_MARGIN_S = 2.0
USER_AGENT = "gridshift (carbon-aware job scheduler)"
# Error bodies are quoted in messages up to this length (they help with 401/403 causes).
MAX_QUOTED_BODY = 160
# No forecast service answers with more than a few megabytes; a larger body is refused.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
# Request headers that carry a credential: never sent on to another origin by a redirect.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "auth-token",
                                "x-api-key", "api-key", "token"})
# The physical range of stored values, by units: gCO2/kWh (the dirtiest grids stay
# well under 2,000) and WattTime's percentile index.
MAX_VALUE_BY_UNITS = {GRAMS_PER_KWH: 5000.0, PERCENTILE: 100.0}


class ProviderError(GridshiftError):
    """A fetch failed or returned something unusable.

    ``str(error)`` is ``"<where>: <problem>"`` where ``where`` names the provider, its kind
    and the zone; ``problem`` alone is kept for reports that already name them. Messages
    never hold a credential (``WebProvider`` scrubs the configured secrets).
    """

    def __init__(self, where: str, problem: str | None = None) -> None:
        if problem is None:  # a single already-complete message
            head, separator, tail = where.partition(": ")
            where, problem = (head, tail) if separator else ("", where)
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


class Provider(ABC):
    """One forecast service. Implementations set ``kind`` and implement both fetches.

    Contract for both fetches: return points sorted by start, non-overlapping, each with
    ``end > start``, a value within ``MAX_VALUE_BY_UNITS`` of its units, ``units``,
    ``signal``, ``basis`` (where known), ``estimated`` and ``vintage`` set where the
    provider publishes an issue time (else None: the store uses the fetch time). Raise
    ProviderError for anything unusable; never return a partial parse of a bad payload (a
    short but valid horizon is fine).
    """

    kind: str = ""
    # The horizon a forecast normally covers; a shorter one is stored but reported.
    usual_horizon: timedelta | None = None

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.signal = config.signal

    def where(self, zone: str) -> str:
        """How messages name this provider and zone, e.g. ``wt (watttime) zone CAISO_NORTH``."""
        return f"{self.name} ({self.kind}) zone {zone}"

    @abstractmethod
    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        """Forecast points for ``zone`` from about ``now`` onwards; kind 'forecast'."""

    @abstractmethod
    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        """Actual (historical) points for ``zone`` overlapping [start, end); kind 'actual'.
        Return [] when the provider publishes none for that zone."""

    def publishes_actuals(self, zone: str) -> bool:
        """Whether ``fetch_actuals`` can ever return points for ``zone``."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release connections (web providers)."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds; None when absent or bad."""
    if value is None:
        return None
    if re.fullmatch(r"\s*[0-9]+\s*", value):
        return float(int(value))
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


class CappedRetry(Retry):
    """urllib3 Retry that never sleeps longer than MAX_RETRY_AFTER_S for a Retry-After.

    A response asking for a longer wait ends the retries at once: the caller gets that
    response (a 429 or 503) and the next scheduled refresh tries again.
    """

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None,
                  _pool: Any = None, _stacktrace: Any = None) -> Self:
        if response is not None:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                raise MaxRetryError(_pool, url or "", ResponseError("Retry-After too long"))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


_DEFAULT_PORTS = {"http": 80, "https": 443}


class CredentialSafeSession(requests.Session):
    """A session that drops every credential header on a redirect to another origin
    (scheme, host or port). requests itself drops only ``Authorization``, and keeps it on
    an http -> https upgrade; a service's own token header it would send anywhere."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest,
                     response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        previous = response.request.url if response.request is not None else None
        if previous is None or prepared_request.url is None \
                or _origin(previous) != _origin(prepared_request.url):
            for name in [n for n in prepared_request.headers if n.lower() in CREDENTIAL_HEADERS]:
                del prepared_request.headers[name]


def make_session(retries: int = 3, backoff: float = 0.5) -> requests.Session:
    """One session per provider: retries on connection errors, 429 and 5xx with backoff."""
    retry = CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = CredentialSafeSession()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class HttpStatusError(ProviderError):
    """A non-200 answer; ``status`` lets a provider react (WattTime renews on 401)."""

    def __init__(self, where: str, problem: str, status: int) -> None:
        super().__init__(where, problem)
        self.status = status


class WebProvider(Provider):
    """A provider reached over HTTP: one requests.Session with retries and timeouts."""

    def __init__(self, config: ProviderConfig, session: requests.Session | None = None) -> None:
        super().__init__(config)
        self.session = session or make_session()
        self.timeout = (CONNECT_TIMEOUT_S, config.timeout.total_seconds())
        # For the whole body: requests' read timeout is per received chunk.
        self.deadline_s = config.timeout.total_seconds() + DEADLINE_MARGIN_S
        assert config.base_url is not None  # config validation sets it for web kinds
        self.base_url: str = config.base_url

    def close(self) -> None:
        self.session.close()

    def get_json(
        self,
        url: str,
        zone: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        """GET and decode JSON; raise ProviderError with a message safe to log.

        Once the answer's headers are in, its body must arrive within the provider's
        ``timeout`` plus DEADLINE_MARGIN_S (plus at most one read timeout): a server
        trickling its answer a byte at a time cannot hold a refresh.
        """
        where = self.where(zone)
        shown = _shown_url(url)
        try:
            with self.session.get(url, params=params, headers=headers, auth=auth,
                                  timeout=self.timeout, stream=True) as response:
                deadline = time.monotonic() + self.deadline_s
                if response.status_code != 200:
                    _read_body(response, deadline, MAX_ERROR_BODY_BYTES, cut=True)
                    raise self._status_error(response, where, shown)
                body = _read_body(response, deadline, MAX_RESPONSE_BYTES)
        except requests.RequestException as error:
            raise ProviderError(where, f"request to {shown} failed: "
                                       f"{_describe(error)}") from None
        except ReadTimeoutError:  # the body is read from urllib3 directly
            raise ProviderError(where, f"request to {shown} failed: timed out") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ProviderError(where, f"request to {shown} failed: connection broken while "
                                       f"reading the answer ({type(error).__name__})") from None
        except _DeadlinePassed:
            raise ProviderError(where, f"request to {shown} failed: no complete answer "
                                       f"within {self.deadline_s:.0f} s") from None
        except _TooLarge:
            raise ProviderError(where, f"response from {shown} is larger than "
                                       f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MB") from None
        try:
            # NaN and Infinity (which Python's decoder takes) fail parse_value by name.
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ProviderError(where, f"response from {shown} is not valid JSON "
                                       f"(truncated or not JSON)") from None

    def _status_error(self, response: requests.Response, where: str,
                      shown: str) -> HttpStatusError:
        problem = f"HTTP {response.status_code} from {shown}"
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if response.status_code in (429, 503) and wait is not None:
            problem += f" (rate limited: the server asks to wait {wait:.0f} s)"
        detail = self._scrub(_error_detail(response))
        if detail:
            problem += f": {detail}"
        return HttpStatusError(where, problem, response.status_code)

    def secrets(self) -> list[str]:
        """Values no message may show: the configured credentials (and session tokens)."""
        return self.config.secrets()

    def _scrub(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


class _DeadlinePassed(Exception):
    pass


class _TooLarge(Exception):
    pass


def _read_body(response: requests.Response, deadline: float, limit: int,
               cut: bool = False) -> bytes:
    """The body, read one network read at a time so the deadline is checked between reads
    (``read(amt)`` would wait for all ``amt`` bytes, however slowly they come). Beyond
    the deadline or ``limit`` bytes: _DeadlinePassed or _TooLarge, or with ``cut`` what
    came so far. The body is kept as ``response.content`` for readers of the error body."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            if cut:  # an error body: what came in time is enough
                break
            raise _DeadlinePassed
        chunk = response.raw.read1(65536, decode_content=True)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            if not cut:
                raise _TooLarge
            chunks.append(chunk[: len(chunk) - (size - limit)])
            break
        chunks.append(chunk)
    body = b"".join(chunks)
    response._content = body
    return body


def _error_detail(response: requests.Response) -> str:
    """The service's own short explanation from a JSON error body, if it gave one."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(body, dict):
        return ""
    for key in ("message", "error", "detail", "title"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return " ".join(value.split())[:MAX_QUOTED_BODY]
    return ""


def _describe(error: requests.RequestException) -> str:
    """The error's kind without its URL (which can carry query parameters)."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    # Retries used up on read timeouts arrive as a ConnectionError wrapping MaxRetryError.
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(reason, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "cannot connect"
    if isinstance(reason, (ReadTimeoutError, ConnectTimeoutError)):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    return type(error).__name__


def _shown_url(url: str) -> str:
    """The URL as messages show it: scheme, host, port and path; never the user
    information or the query (either can carry a credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


P = ParamSpec("P")
R = TypeVar("R")


def payload_parser(parse: Callable[P, R]) -> Callable[P, R]:
    """Mark a pure parse function: any value a service sends that overflows or cannot be
    converted (a year 9999 plus an hour, a number too large for a float) becomes a
    ProviderError naming the function's ``where`` argument, like every other bad payload."""
    signature = inspect.signature(parse)

    @functools.wraps(parse)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return parse(*args, **kwargs)
        except (OverflowError, ValueError, RecursionError) as error:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            where = str(bound.arguments.get("where", ""))
            raise ProviderError(where, f"malformed response: {error}"[:MAX_QUOTED_BODY]
                                ) from None

    return guarded


def parse_time(text: Any, where: str) -> datetime:
    """An ISO-8601 time (``Z`` or an offset; naive means UTC) as aware UTC."""
    if not isinstance(text, str):
        raise ProviderError(where, f"bad time {text!r}")
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    # .NET writes seven fractional digits; Python 3.11 reads at most six.
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", cleaned)
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ProviderError(where, f"bad time {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_value(value: Any, where: str, at: datetime) -> float:
    """A JSON number that is finite (``check_points`` checks its range, once in units)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProviderError(where, f"bad value {value!r} at {at.isoformat()}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ProviderError(where, f"bad value {_short(value)} at {at.isoformat()}: "
                                   f"not a finite number")
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def value_problem(value: float, units: str) -> str | None:
    """Why ``value`` cannot be a real intensity in ``units``; None when it can."""
    top = MAX_VALUE_BY_UNITS.get(units, MAX_VALUE_BY_UNITS[GRAMS_PER_KWH])
    if not math.isfinite(value):
        return f"bad value {value!r}: not a finite number"
    if not 0 <= value <= top:
        label = "percentile index" if units == PERCENTILE else "gCO2/kWh"
        return f"bad value {value!r}: outside 0..{top:,.0f} {label}"
    return None


def step_of(starts: Sequence[datetime], where: str, default: timedelta | None) -> timedelta:
    """The spacing of a series given only by start times: the smallest positive step."""
    steps = [b - a for a, b in itertools.pairwise(starts) if b > a]
    if steps:
        return min(steps)
    if default is None:
        raise ProviderError(where, "cannot tell the length of a single data point")
    return default


def check_points(points: Sequence[PointRecord], where: str,
                 contiguous: bool = False) -> list[PointRecord]:
    """Validate a parsed series: non-empty, finite non-negative values, sorted, no overlaps.

    ``contiguous`` also refuses gaps (forecasts from web providers come gap-free; a hole
    means a damaged response).
    """
    if not points:
        raise ProviderError(where, "no data points in the response")
    for point in points:
        problem = value_problem(point.value, point.units)
        if problem is not None:
            raise ProviderError(where, f"{problem} at {point.start.isoformat()}")
        if point.end <= point.start:
            raise ProviderError(where, f"empty interval at {point.start.isoformat()}")
    for previous, current in itertools.pairwise(points):
        if current.start < previous.end:
            raise ProviderError(
                where, f"duplicate or unsorted timestamps at {current.start.isoformat()}"
            )
    for previous, current in itertools.pairwise(points):
        if contiguous and current.start > previous.end:
            raise ProviderError(
                where, f"gap in the data from {previous.end.isoformat()} "
                       f"to {current.start.isoformat()}"
            )
    return list(points)


def overlapping(points: Sequence[PointRecord], start: datetime,
                end: datetime) -> list[PointRecord]:
    """The points that overlap [start, end)."""
    return [p for p in points if p.start < end and p.end > start]
