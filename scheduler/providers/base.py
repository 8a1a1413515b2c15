"""The provider interface, and the HTTP plumbing every web provider shares.

A provider turns one forecast service into ``PointRecord`` lists. Each provider module
keeps three things apart: building the request (pure), parsing and validating the
payload (pure, testable from a saved file) and the single HTTP call (here).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from scheduler.config import ProviderConfig
from scheduler.errors import GridshiftError
from scheduler.store import PointRecord

# urllib3 honours Retry-After up to six hours by default; a refresh must not hang that long.
MAX_RETRY_AFTER_S = 30.0
CONNECT_TIMEOUT_S = 5.0
USER_AGENT = "gridshift (carbon-aware job scheduler)"


class ProviderError(GridshiftError):
    """A fetch failed or returned something unusable. The message is safe to log:
    it names the provider, zone and problem, and never a credential."""


class Provider(ABC):
    """One forecast service. Implementations set ``kind`` and implement both fetches.

    Contract for both methods: return points sorted by start, non-overlapping, each with
    ``end > start``, a finite non-negative value, ``units``, ``signal`` and ``vintage`` set
    where the provider publishes an issue time (else None: the store uses fetch time).
    Raise ProviderError for anything unusable; never return a partial parse of a bad
    payload (a short but valid horizon is fine).
    """

    kind: str = ""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.signal = config.signal

    @abstractmethod
    def fetch_forecast(self, zone: str, now: datetime) -> list[PointRecord]:
        """Forecast points for ``zone`` from about ``now`` onwards."""

    @abstractmethod
    def fetch_actuals(self, zone: str, start: datetime, end: datetime) -> list[PointRecord]:
        """Actual (historical) points for ``zone`` overlapping [start, end); kind 'actual'.
        Return [] when the provider publishes none for that zone."""

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release connections (web providers)."""


class CappedRetry(Retry):
    """urllib3 Retry whose Retry-After sleep is capped at MAX_RETRY_AFTER_S."""

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER_S)


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
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class WebProvider(Provider):
    """A provider reached over HTTP: one requests.Session with retries and timeouts."""

    def __init__(self, config: ProviderConfig, session: requests.Session | None = None) -> None:
        super().__init__(config)
        self.session = session or make_session()
        self.timeout = (CONNECT_TIMEOUT_S, config.timeout.total_seconds())

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
        """GET and decode JSON; raise ProviderError with a message safe to log."""
        where = f"{self.name} ({self.kind}) zone {zone}"
        try:
            response = self.session.get(url, params=params, headers=headers, auth=auth,
                                        timeout=self.timeout)
        except requests.RequestException as error:
            raise ProviderError(f"{where}: request failed: {_describe(error)}") from None
        if response.status_code != 200:
            raise ProviderError(f"{where}: HTTP {response.status_code} from {_path_of(url)}")
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"{where}: response is not JSON") from None


def _describe(error: requests.RequestException) -> str:
    """The error's kind without its URL (which can carry query parameters)."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    return type(error).__name__


def _path_of(url: str) -> str:
    return url.split("?", 1)[0]


def check_points(points: Sequence[PointRecord], where: str) -> list[PointRecord]:
    """Validate a parsed series: non-empty, finite non-negative values, sorted, no overlaps."""
    if not points:
        raise ProviderError(f"{where}: no data points in the response")
    for point in points:
        if not math.isfinite(point.value) or point.value < 0:
            raise ProviderError(f"{where}: bad value {point.value!r} at {point.start.isoformat()}")
        if point.end <= point.start:
            raise ProviderError(f"{where}: empty interval at {point.start.isoformat()}")
    for previous, current in itertools.pairwise(points):
        if current.start < previous.end:
            raise ProviderError(
                f"{where}: duplicate or unsorted timestamps at {current.start.isoformat()}"
            )
    return list(points)
