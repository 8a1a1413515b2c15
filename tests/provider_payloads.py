"""Provider response payloads for tests: real samples, and documented shapes filled with
real values, moved to whatever start time a test needs. See fixtures/providers/SOURCES.md.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from scheduler.config import DEFAULT_SIGNALS, ProviderConfig
from scheduler.providers import watttime
from scheduler.providers.base import make_session

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
SLOT = timedelta(minutes=30)


def load_json(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def uk_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def em_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# UK Carbon Intensity -------------------------------------------------------------------

def uk_forecast_values() -> list[float]:
    """The 96 half-hourly values of a real national fw48h forecast."""
    with (FIXTURES / "carbonintensity_uk" / "national_fw48h_example.csv").open() as handle:
        return [float(row["intensity.forecast"]) for row in csv.DictReader(handle)]


def uk_slots(start: datetime, values: list[float]) -> list[dict[str, Any]]:
    return [
        {"from": uk_time(start + i * SLOT), "to": uk_time(start + (i + 1) * SLOT),
         "intensity": {"forecast": int(v) if v == int(v) else v, "index": "moderate"}}
        for i, v in enumerate(values)
    ]


def uk_national(start: datetime, values: list[float]) -> dict[str, Any]:
    """``/intensity/{from}/fw48h``: ``{"data": [slot, ...]}``."""
    return {"data": uk_slots(start, values)}


def uk_regional(start: datetime, values: list[float], wrapped_in_list: bool,
                postcode: str | None = None) -> dict[str, Any]:
    """``/regional/intensity/{from}/fw48h/regionid/{id}`` (or ``/postcode/{outcode}``)."""
    slots = uk_slots(start, values)
    for slot in slots:
        slot["generationmix"] = [{"fuel": "gas", "perc": 40.1}, {"fuel": "wind", "perc": 30.2}]
    region: dict[str, Any] = {"regionid": 12, "dnoregion": "SSE South",
                              "shortname": "South England", "data": slots}
    if postcode is not None:
        region["postcode"] = postcode
    return {"data": [region] if wrapped_in_list else region}


def uk_actuals_moved(start: datetime) -> dict[str, Any]:
    """The real pt24h sample (forecast and actual per slot) moved to begin at ``start``."""
    payload = load_json("carbonintensity_uk/national_pt24h_example.json")
    for i, slot in enumerate(payload["data"]):
        slot["from"] = uk_time(start + i * SLOT)
        slot["to"] = uk_time(start + (i + 1) * SLOT)
    return dict(payload)


# Electricity Maps ----------------------------------------------------------------------

def em_history() -> dict[str, Any]:
    return dict(load_json("electricitymaps/carbon_intensity_history.json"))


def em_forecast(start: datetime, values: list[float], updated_at: datetime,
                zone: str = "DE") -> dict[str, Any]:
    """``/v3/carbon-intensity/forecast``, hourly points."""
    return {
        "zone": zone,
        "forecast": [{"carbonIntensity": v, "datetime": em_time(start + timedelta(hours=i))}
                     for i, v in enumerate(values)],
        "updatedAt": em_time(updated_at),
    }


def em_values() -> list[float]:
    return [float(entry["carbonIntensity"]) for entry in em_history()["history"]]


def em_past_range(start: datetime) -> dict[str, Any]:
    """``/v3/carbon-intensity/past-range``: the real history entries under ``data``,
    moved to begin at ``start``."""
    history = em_history()
    entries = history["history"]
    for i, entry in enumerate(entries):
        entry["datetime"] = em_time(start + timedelta(hours=i))
    return {"zone": history["zone"], "data": entries}


# WattTime ------------------------------------------------------------------------------

def wt_moer_g_per_kwh() -> list[float]:
    """288 real five-minute CAISO_NORTH MOER values in gCO2/kWh."""
    path = FIXTURES / "watttime" / "caiso_north_moer_g_per_kwh_24h.csv"
    with path.open() as handle:
        return [float(row["Caiso_North"]) for row in csv.DictReader(handle)]


def wt_forecast(start: datetime, lbs_values: list[float], generated_at: datetime,
                units: str = "lbs_co2_per_mwh", region: str = "CAISO_NORTH") -> dict[str, Any]:
    """``/v3/forecast``: five-minute points."""
    return {
        "data": [{"point_time": (start + timedelta(minutes=5 * i)).isoformat(), "value": v}
                 for i, v in enumerate(lbs_values)],
        "meta": {"data_point_period_seconds": 300, "region": region,
                 "signal_type": "co2_moer", "units": units,
                 "generated_at": generated_at.isoformat(), "generated_at_period_seconds": 300,
                 "model": {"date": "2023-03-01"}, "warnings": []},
    }


def wt_lbs_values(count: int = 288) -> list[float]:
    """Real MOER values expressed back in the lbs/MWh WattTime serves."""
    return [round(g / watttime.LBS_PER_MWH_TO_G_PER_KWH, 3)
            for g in wt_moer_g_per_kwh()[:count]]


def wt_historical_moved(start: datetime) -> dict[str, Any]:
    payload = dict(load_json("watttime/historical_emissions_response.json"))
    for i, point in enumerate(payload["data"]):
        point["point_time"] = (start + timedelta(minutes=5 * i)).isoformat()
    return payload


# Carbon Aware SDK ----------------------------------------------------------------------

def casdk_forecast(start: datetime, values: list[float], generated_at: datetime,
                   location: str = "eastus", minutes: int = 5) -> list[dict[str, Any]]:
    """``/emissions/forecasts/current``: one EmissionsForecastDTO per location."""
    points: list[dict[str, Any]] = [
        {"location": "PJM_ROANOKE",
         "timestamp": (start + timedelta(minutes=minutes * i)).isoformat(),
         "duration": minutes, "value": v} for i, v in enumerate(values)]
    best = min(points, key=lambda p: float(p["value"])) if points else None
    return [{
        "requestedAt": generated_at.isoformat(), "generatedAt": generated_at.isoformat(),
        "location": location, "dataStartAt": start.isoformat(),
        "dataEndAt": (start + timedelta(minutes=minutes * len(values))).isoformat(),
        "windowSize": minutes, "optimalDataPoints": [best] if best else [],
        "forecastData": points,
    }]


def casdk_emissions(start: datetime, values: list[float], location: str = "eastus",
                    hours: int = 1) -> list[dict[str, Any]]:
    """``/emissions/bylocations``: EmissionsData with a TimeSpan duration."""
    return [{"location": location,
             "time": (start + timedelta(hours=hours * i)).isoformat(),
             "rating": v, "duration": f"{hours:02d}:00:00"} for i, v in enumerate(values)]


# Providers pointed at a local server ---------------------------------------------------

def web_config(kind: str, base_url: str, **settings: Any) -> ProviderConfig:
    """A provider config as the config loader would build it, aimed at ``base_url``."""
    settings.setdefault("signal", DEFAULT_SIGNALS[kind])
    return ProviderConfig(name=settings.pop("name", kind), kind=kind,
                          base_url=base_url.rstrip("/"),
                          timeout=settings.pop("timeout", timedelta(seconds=5)), **settings)


def fast_session() -> requests.Session:
    """One retry without backoff: the retry path is exercised, the test stays fast."""
    return make_session(retries=1, backoff=0)
