"""Provider settings in the config: credentials from the environment, per-kind keys, and
the example blocks of docs/providers.md (each must load as shown)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from scheduler.config import parse_config
from scheduler.errors import ConfigError
from scheduler.providers import KINDS, build_provider

PROVIDERS_PAGE = Path(__file__).parent.parent / "docs" / "providers.md"


def _page_blocks() -> list[str]:
    text = PROVIDERS_PAGE.read_text(encoding="utf-8")
    return re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)


def test_the_providers_page_documents_every_kind_with_a_block() -> None:
    kinds = {tomllib.loads(b)["providers"][name]["kind"]
             for b in _page_blocks() for name in tomllib.loads(b)["providers"]}
    assert kinds == set(KINDS)


def test_the_providers_page_has_a_section_per_kind() -> None:
    text = PROVIDERS_PAGE.read_text(encoding="utf-8")
    headings = set(re.findall(r"^## `(\w+)`", text, flags=re.MULTILINE))
    assert headings == set(KINDS)


@pytest.mark.parametrize("block", _page_blocks(), ids=lambda b: b.split("\n")[1])
def test_each_example_block_loads_and_builds(block: str, tmp_path: Path) -> None:
    (tmp_path / "intensity.csv").write_text("start,end,gco2_per_kwh\n", encoding="utf-8")
    source = str(tmp_path / "gridshift.toml")
    config = parse_config(tomllib.loads(block), source, {})
    for settings in config.providers.values():
        assert build_provider(settings).kind == settings.kind


def test_credentials_come_from_the_environment_and_the_config_wins() -> None:
    raw = tomllib.loads(
        '[providers.em]\nkind = "electricitymaps"\n'
        '[providers.wt]\nkind = "watttime"\nusername = "from-config"\n'
        '[regions.de]\nprovider = "em"\nzone = "DE"\n')
    environ = {"GRIDSHIFT_ELECTRICITYMAPS_TOKEN": "env-token",
               "GRIDSHIFT_WATTTIME_USERNAME": "env-user",
               "GRIDSHIFT_WATTTIME_PASSWORD": "env-password"}
    config = parse_config(raw, "test.toml", environ)
    assert config.providers["em"].token == "env-token"
    assert (config.providers["wt"].username, config.providers["wt"].password) == (
        "from-config", "env-password")
    assert "env-password" not in repr(config) and "env-token" not in repr(config)
    assert sorted(config.secrets()) == ["env-password", "env-token", "from-config"]


@pytest.mark.parametrize(("table", "key"), [
    ('kind = "watttime"\nbasis = "direct"', "providers.p.basis"),
    ('kind = "electricitymaps"\nsignal = "marginal"', "providers.p.signal"),
    ('kind = "carbonintensity_uk"\ntoken = "x"', "providers.p.token"),
    ('kind = "electricitymaps"\nbasis = "operational"', "providers.p.basis"),
])
def test_keys_a_kind_does_not_take_are_refused(table: str, key: str) -> None:
    raw = tomllib.loads(f"[providers.p]\n{table}\n[regions.r]\nprovider = \"p\"\nzone = \"z\"\n")
    with pytest.raises(ConfigError) as raised:
        parse_config(raw, "test.toml", {})
    assert raised.value.key == key
