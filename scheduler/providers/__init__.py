"""Forecast providers: one module per service behind ``base.Provider``."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.config import ProviderConfig
from scheduler.providers.base import Provider, ProviderError


def build_provider(config: ProviderConfig) -> Provider:
    """The provider object for one ``[providers.NAME]`` table."""
    factories: dict[str, Callable[[ProviderConfig], Provider]] = _factories()
    try:
        factory = factories[config.kind]
    except KeyError:
        raise ProviderError(f"{config.name}: unknown provider kind {config.kind!r}") from None
    return factory(config)


def _factories() -> dict[str, Callable[[ProviderConfig], Provider]]:
    # Imported here so the CLI's start-up does not pay for requests unless it fetches.
    from scheduler.providers.carbonintensity_uk import CarbonIntensityUK
    from scheduler.providers.csvfile import CsvProvider

    return {"carbonintensity_uk": CarbonIntensityUK, "csv": CsvProvider}


__all__ = ["Provider", "ProviderError", "build_provider"]
