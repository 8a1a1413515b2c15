"""Forecast providers: one module per service behind ``base.Provider``."""

from __future__ import annotations

import importlib

from scheduler.config import ProviderConfig
from scheduler.providers.base import Provider, ProviderError

# kind -> (module, class). A provider's module is imported only when one of its kind is
# built: a config with one provider loads only that module.
KINDS: dict[str, tuple[str, str]] = {
    "carbonintensity_uk": ("scheduler.providers.carbonintensity_uk", "CarbonIntensityUK"),
    "csv": ("scheduler.providers.csvfile", "CsvProvider"),
    "electricitymaps": ("scheduler.providers.electricitymaps", "ElectricityMaps"),
    "watttime": ("scheduler.providers.watttime", "WattTime"),
    "carbon_aware_sdk": ("scheduler.providers.carbon_aware_sdk", "CarbonAwareSdk"),
    "replay": ("scheduler.providers.replay", "ReplayProvider"),
}


def build_provider(config: ProviderConfig) -> Provider:
    """The provider object for one ``[providers.NAME]`` table."""
    try:
        module_name, class_name = KINDS[config.kind]
    except KeyError:
        raise ProviderError(config.name, f"unknown provider kind {config.kind!r}") from None
    factory: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return factory(config)


__all__ = ["KINDS", "Provider", "ProviderError", "build_provider"]
