"""DUR and WHEN parsing: every accepted form, and every bad form refused with BadInput."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.errors import BadInput
from scheduler.timespec import (
    format_duration,
    format_local,
    format_local_iso,
    iso_utc,
    parse_duration,
    parse_job_id,
    parse_when,
)

NOW = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("45m", 45 * 60),
        ("2h", 2 * 3600),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1d2h3m4s", 86400 + 2 * 3600 + 3 * 60 + 4),
        ("2H", 7200),
        (" 5m ", 300),
        ("2w", 14 * 86400),
        ("4y", 4 * 365 * 86400),
        ("1y2w3d", (365 + 14 + 3) * 86400),
    ],
)
def test_duration_forms(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["", "0s", "0h0m", "abc", "1.5h", "-5m", "5", "h", "1h 30m", "30m1h", "1h1h", "3651d",
     "2 hours", "1w1y", "11y", "\u0661h", "\uff11h", "1h\u0663\u0660m"],
)
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1, 59, 60, 90, 5400, 86400, 93784])
def test_format_duration_round_trips(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_when_iso_with_offset_is_converted_to_utc() -> None:
    parsed = parse_when("2026-11-26T18:00+01:00", NOW)
    assert parsed == datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)
    assert parse_when("2026-11-26T18:00Z", NOW) == datetime(2026, 11, 26, 18, 0, tzinfo=UTC)


@pytest.fixture
def local_zone_utc_minus_5(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone at UTC-5 (a POSIX TZ string: no tz database)."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_zone_utc_minus_5")
def test_naive_when_is_local_time() -> None:
    assert parse_when("2026-11-26T18:00", NOW) == datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    # Human output converts back to the same local time and shows the zone.
    assert format_local(datetime(2026, 11, 26, 23, 0, tzinfo=UTC)) == "2026-11-26 18:00 EST"


@pytest.mark.parametrize("zone", ["UTC0", "GMT0", "EST+5", "CET-1CEST,M3.5.0,M10.5.0/3"])
def test_formatting_iso_texts_in_bulk_equals_formatting_each(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """Reports format start times from their ISO text; in a UTC zone by cutting the text,
    elsewhere by converting. Either way each equals format_local's, and None stays '-'."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        times = [datetime(2026, month, 28, hour, minute, second, micro, tzinfo=UTC)
                 for month in (3, 7, 10) for hour in (0, 1, 2, 23)
                 for minute, second, micro in ((0, 0, 0), (59, 59, 999999), (30, 1, 5))]
        texts = [iso_utc(value) for value in times] + [None]
        assert format_local_iso(texts) == [format_local(value) for value in times] + ["-"]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_relative_when_counts_from_now() -> None:
    assert parse_when("+2h", NOW) == NOW + timedelta(hours=2)
    assert parse_when("+1h30m", NOW) == NOW + timedelta(minutes=90)
    assert parse_when("-7d", NOW) == NOW - timedelta(days=7)
    assert parse_when(" -1h30m ", NOW) == NOW - timedelta(minutes=90)


@pytest.mark.parametrize(
    "text",
    ["tomorrow", "", "+", "+0s", "+2 hours", "-", "-0s", "-7 days", "--7d",
     "2026-13-01T00:00", "2026-11-26 25:00", "18:00+01:00", "+\u0661h",
     "\u0662\u0660\u0662\u0666-11-26T10:00+00:00"],
)
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match=r"bad (time|duration)"):
        parse_when(text, NOW)


def test_json_times_are_utc_and_naive_datetimes_are_refused() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert iso_utc(datetime(2026, 11, 26, 12, 0, tzinfo=plus_two)) == "2026-11-26T10:00:00+00:00"
    assert iso_utc(None) is None
    with pytest.raises(ValueError, match="naive"):
        iso_utc(datetime(2026, 11, 26, 12, 0))


@pytest.mark.parametrize("text", ["0", "-1", "99999999999999999999", "9223372036854775808",
                                  "1e3", "\u0661", "", "12a", "1" * 5000])
def test_job_ids_outside_a_64_bit_integer_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="bad job id"):
        parse_job_id(text)


def test_job_ids_up_to_the_64_bit_limit_are_accepted() -> None:
    assert parse_job_id("1") == 1
    assert parse_job_id(" 42 ") == 42
    assert parse_job_id(9223372036854775807) == 2**63 - 1
