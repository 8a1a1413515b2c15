"""Bounds at the providers' edge (issue 16 items 4, 7, 8, 9; issue 14 item 6): credentials
never follow a redirect to another origin, a trickling server cannot hold a refresh, a
fetch stores a bounded number of points within the usable window, in short transactions,
and values outside the physical range store nothing. Real loopback servers, real payloads.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import event
from werkzeug import Request, Response

from scheduler import forecasting
from scheduler.config import load_config
from scheduler.providers import build_provider
from scheduler.providers.base import ProviderError
from scheduler.providers.carbon_aware_sdk import CarbonAwareSdk
from scheduler.providers.electricitymaps import ElectricityMaps
from scheduler.providers.watttime import WattTime
from scheduler.store import PointRecord, Store
from tests.provider_payloads import (
    casdk_forecast,
    em_forecast,
    em_values,
    fast_session,
    web_config,
    wt_forecast,
    wt_lbs_values,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TOKEN = "em-secret-token-7f3a"


@pytest.fixture
def other_server() -> Iterator[HTTPServer]:
    """A second loopback server: another origin (another port) for redirects."""
    server = HTTPServer(host="localhost", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def _json(document: Any) -> Response:
    return Response(json.dumps(document), content_type="application/json")


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


def _store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'g.db'}")


# Credentials and redirects (16.7) ------------------------------------------------------

def test_electricitymaps_token_is_not_sent_to_another_origin(
    httpserver: HTTPServer, other_server: HTTPServer,
) -> None:
    seen: list[Request] = []

    def elsewhere(request: Request) -> Response:
        seen.append(request)
        return _json(em_forecast(NOW, em_values(), NOW))

    other_server.expect_request("/moved").respond_with_handler(elsewhere)
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_response(
        _redirect(other_server.url_for("/moved")))
    config = web_config("electricitymaps", httpserver.url_for("/"), name="em", token=TOKEN)
    points = ElectricityMaps(config, session=fast_session()).fetch_forecast("DE", NOW)
    assert len(points) == len(em_values())
    assert len(seen) == 1
    assert "auth-token" not in seen[0].headers
    assert TOKEN not in str(seen[0].headers)


def test_a_redirect_within_the_same_origin_keeps_the_token(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_response(
        _redirect(httpserver.url_for("/v3/moved")))
    httpserver.expect_request("/v3/moved", headers={"auth-token": TOKEN}
                              ).respond_with_json(em_forecast(NOW, em_values(), NOW))
    config = web_config("electricitymaps", httpserver.url_for("/"), name="em", token=TOKEN)
    assert ElectricityMaps(config, session=fast_session()).fetch_forecast("DE", NOW)


def test_watttime_bearer_token_is_not_sent_to_another_origin(
    httpserver: HTTPServer, other_server: HTTPServer,
) -> None:
    seen: list[Request] = []

    def elsewhere(request: Request) -> Response:
        seen.append(request)
        return _json(wt_forecast(NOW, wt_lbs_values(12), NOW))

    other_server.expect_request("/moved").respond_with_handler(elsewhere)
    httpserver.expect_request("/login").respond_with_json({"token": "wt-session-token"})
    httpserver.expect_request("/v3/forecast").respond_with_response(
        _redirect(other_server.url_for("/moved")))
    config = web_config("watttime", httpserver.url_for("/"), name="wt", username="ann",
                        password="hunter2-pass")
    assert len(WattTime(config, session=fast_session()).fetch_forecast("CAISO_NORTH", NOW)) \
        == 12
    assert len(seen) == 1
    assert "Authorization" not in seen[0].headers


def test_any_authorization_header_is_dropped_for_another_origin(
    httpserver: HTTPServer, other_server: HTTPServer,
) -> None:
    """The Carbon Aware WebAPI has no credential of its own; one given to the session (a
    proxy in front of it) is dropped the same way."""
    seen: list[Request] = []

    def elsewhere(request: Request) -> Response:
        seen.append(request)
        return _json(casdk_forecast(NOW, [300.0, 280.0], NOW))

    other_server.expect_request("/moved").respond_with_handler(elsewhere)
    httpserver.expect_request("/emissions/forecasts/current").respond_with_response(
        _redirect(other_server.url_for("/moved")))
    session = fast_session()
    session.headers["Authorization"] = "Bearer proxy-secret"
    config = web_config("carbon_aware_sdk", httpserver.url_for("/"), name="gsf")
    assert CarbonAwareSdk(config, session=session).fetch_forecast("eastus", NOW)
    assert len(seen) == 1 and "Authorization" not in seen[0].headers


# Deadlines and messages (16.8, 14.6) ---------------------------------------------------

def test_a_server_trickling_its_answer_cannot_hold_a_fetch(httpserver: HTTPServer) -> None:
    """Every byte comes well within the 1 s read timeout, the whole answer would take
    about 8 s: the fetch gives up at its deadline and names the host."""
    body = json.dumps(em_forecast(NOW, em_values(), NOW)).encode()

    def trickle() -> Iterator[bytes]:
        yield body
        for _ in range(40):  # JSON allows trailing whitespace: the answer stays valid
            time.sleep(0.2)
            yield b" "

    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_response(
        Response(trickle(), content_type="application/json"))
    config = web_config("electricitymaps", httpserver.url_for("/"), name="em", token=TOKEN,
                        timeout=timedelta(seconds=1))
    with pytest.raises(ProviderError) as raised:
        ElectricityMaps(config, session=fast_session()).fetch_forecast("DE", NOW)
    assert "no complete answer within 3 s" in str(raised.value)
    assert f"request to http://localhost:{httpserver.port}/v3/carbon-intensity/forecast" \
        in str(raised.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_network_error_names_the_host_but_never_a_credential() -> None:
    port = _closed_port()
    config = web_config("watttime", f"http://ann:url-secret@127.0.0.1:{port}", name="wt",
                        username="ann", password="hunter2-pass")
    with pytest.raises(ProviderError) as raised:
        WattTime(config, session=fast_session()).fetch_forecast("CAISO_NORTH", NOW)
    message = str(raised.value)
    assert f"request to http://127.0.0.1:{port}/login failed: cannot connect" in message
    assert "url-secret" not in message and "hunter2" not in message


# Bounded refreshes (16.8, 16.4) --------------------------------------------------------

def _csv_config(tmp_path: Path, rows: list[str], daemon: str = "") -> Path:
    data = tmp_path / "data.csv"
    data.write_text("start,end,gco2_per_kwh\n" + "\n".join(rows) + "\n", encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\n{daemon}\n[providers.f]\nkind = "csv"\npath = "data.csv"\n'
                      f'[regions.r]\nprovider = "f"\nzone = "z"\n', encoding="utf-8")
    return config


def _hourly_rows(start: datetime, count: int, value: float = 200.0) -> list[str]:
    return [f"{(start + i * HOUR).isoformat()},{(start + (i + 1) * HOUR).isoformat()},{value}"
            for i in range(count)]


def test_a_csv_over_the_point_cap_is_refused_naming_file_and_cap(tmp_path: Path) -> None:
    path = _csv_config(tmp_path, _hourly_rows(NOW, 30), "max_points_per_refresh = 10")
    config = load_config(str(path), {})
    store = _store(tmp_path)
    [result] = forecasting.refresh_all(config, store, NOW)
    assert not result.ok
    assert str(tmp_path / "data.csv") in result.error
    assert "more than 10 rows" in result.error and "max_points_per_refresh" in result.error
    assert store.series("f", "z", NOW, NOW + 40 * HOUR).values == []


def test_a_web_fetch_over_the_point_cap_stores_nothing(tmp_path: Path,
                                                       httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_json(
        em_forecast(NOW, em_values(), NOW))
    config = web_config("electricitymaps", httpserver.url_for("/"), name="em", token=TOKEN,
                        max_points=10)
    store = _store(tmp_path)
    result = forecasting.refresh_zone(store, ElectricityMaps(config, session=fast_session()),
                                      "DE", NOW)
    assert not result.ok
    assert f"{len(em_values())} points" in result.error and "(10)" in result.error
    assert store.series("em", "DE", NOW, NOW + 48 * HOUR).values == []


def test_only_the_usable_window_is_stored(tmp_path: Path) -> None:
    """40 days of history and 10 days ahead: kept from retention (30d) ago to the
    horizon (2d here)."""
    start = NOW - timedelta(days=40)
    path = _csv_config(tmp_path, _hourly_rows(start, 50 * 24),
                       'forecast_horizon = "2d"\nretention = "30d"')
    config = load_config(str(path), {})
    store = _store(tmp_path)
    [result] = forecasting.refresh_all(config, store, NOW)
    assert result.ok
    kept = store.series("f", "z", start, start + timedelta(days=60))
    assert kept.starts[0] == NOW - timedelta(days=30)
    assert kept.starts[-1] == NOW + timedelta(days=2)
    assert result.stored == len(kept) == 32 * 24 + 1
    assert "not stored" in result.describe()


def test_points_are_written_in_short_transactions_and_counted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    points = [PointRecord(start=NOW + i * timedelta(minutes=5),
                          end=NOW + (i + 1) * timedelta(minutes=5), value=200.0,
                          kind="forecast", signal="average") for i in range(5000)]
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _connection: commits.append(1))
    assert store.add_points("p", "z", points, NOW) == 5000
    assert len(commits) == 3  # 2,000 + 2,000 + 1,000 rows
    assert store.add_points("p", "z", points, NOW) == 0  # the same points again: none new


# Values at the boundary (16.9) ---------------------------------------------------------

@pytest.mark.parametrize("bad", [1e308, -1.0, 5000.5, 10**400])
def test_a_provider_value_outside_the_physical_range_stores_nothing(
    tmp_path: Path, httpserver: HTTPServer, bad: float,
) -> None:
    values: list[Any] = em_values()
    values[3] = bad
    httpserver.expect_request("/v3/carbon-intensity/forecast").respond_with_response(
        Response(json.dumps(em_forecast(NOW, values, NOW)), content_type="application/json"))
    config = web_config("electricitymaps", httpserver.url_for("/"), name="em", token=TOKEN)
    store = _store(tmp_path)
    result = forecasting.refresh_zone(store, ElectricityMaps(config, session=fast_session()),
                                      "DE", NOW)
    assert not result.ok
    assert "bad value" in result.error and (NOW + 3 * HOUR).isoformat() in result.error
    assert store.series("em", "DE", NOW, NOW + 48 * HOUR).values == []


def test_a_percentile_index_above_100_is_refused(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/login").respond_with_json({"token": "t"})
    httpserver.expect_request("/v3/forecast").respond_with_json(
        wt_forecast(NOW, [40.0, 101.0], NOW, units="percentile"))
    config = web_config("watttime", httpserver.url_for("/"), name="wt", username="u",
                        password="p")
    with pytest.raises(ProviderError, match=r"outside 0\.\.100 percentile index"):
        WattTime(config, session=fast_session()).fetch_forecast("CAISO_NORTH", NOW)


@pytest.mark.parametrize("bad", ["1e308", "nan", "inf", "-5"])
def test_a_csv_value_outside_the_range_names_file_and_line(tmp_path: Path, bad: str) -> None:
    rows = _hourly_rows(NOW, 5)
    rows[2] = rows[2].rsplit(",", 1)[0] + f",{bad}"
    config = load_config(str(_csv_config(tmp_path, rows)), {})
    with pytest.raises(ProviderError) as raised:
        build_provider(config.providers["f"]).fetch_forecast("z", NOW)
    assert f"{tmp_path / 'data.csv'}: line 4: bad value" in str(raised.value)


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = _csv_config(tmp_path, _hourly_rows(NOW, 3, 150.0))
    data = tmp_path / "data.csv"
    data.write_bytes(b"\xef\xbb\xbf" + data.read_bytes())
    points = build_provider(load_config(str(path), {}).providers["f"]).fetch_forecast("z", NOW)
    assert [p.value for p in points] == [150.0] * 3


def test_overlapping_csv_rows_name_both_lines(tmp_path: Path) -> None:
    rows = _hourly_rows(NOW, 4)
    rows.append(f"{(NOW + 90 * timedelta(minutes=1)).isoformat()},"
                f"{(NOW + 3 * HOUR).isoformat()},100")
    config = load_config(str(_csv_config(tmp_path, rows)), {})
    with pytest.raises(ProviderError) as raised:
        build_provider(config.providers["f"]).fetch_forecast("z", NOW)
    assert "line 6: duplicate or unsorted timestamps" in str(raised.value)
    assert "overlaps line 3" in str(raised.value)


def test_a_refresh_summary_is_one_line_whatever_the_error_holds() -> None:
    result = forecasting.RefreshResult("p", "z", False, error="first\nsecond\r\nthird")
    assert result.describe() == "p zone z: FAILED: first second third"


def test_a_connection_closed_mid_answer_is_a_provider_error() -> None:
    """The server promises 5,000 bytes and hangs up after 20: one ProviderError."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = int(listener.getsockname()[1])

    def serve() -> None:
        for _ in range(2):  # the first try and the session's one retry
            try:
                connection, _address = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: 5000\r\n\r\n" + b'{"forecast": [{"da')

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    config = web_config("electricitymaps", f"http://127.0.0.1:{port}", name="em", token=TOKEN)
    try:
        with pytest.raises(ProviderError) as raised:
            ElectricityMaps(config, session=fast_session()).fetch_forecast("DE", NOW)
    finally:
        listener.close()
    assert f"request to http://127.0.0.1:{port}/v3/carbon-intensity/forecast failed: " \
           f"connection broken" in str(raised.value)
