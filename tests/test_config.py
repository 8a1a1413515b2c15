"""Config: where it is found, what it defaults to, and one clear message for every bad case."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler import config as config_module
from scheduler.config import BUILTIN, load_config
from scheduler.errors import ConfigError
from tests.conftest import Workspace

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED_CONFIG = REPO / "config" / "gridshift.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def region_config(region: str) -> str:
    return f'[providers.uk]\nkind = "carbonintensity_uk"\n[regions.{region}]\nprovider = "uk"\n'


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An environment whose XDG directories are all inside tmp_path (and empty)."""
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
    }


def test_builtin_defaults_are_great_britain_from_the_uk_api(
    environ: dict[str, str], tmp_path: Path
) -> None:
    config = load_config(None, environ)
    assert config.source == BUILTIN
    assert list(config.regions) == ["gb"]
    gb = config.regions["gb"]
    assert (gb.zone, gb.slots, gb.launcher) == ("national", 1, ())
    provider = config.providers[gb.provider]
    assert provider.kind == "carbonintensity_uk"
    assert provider.base_url == "https://api.carbonintensity.org.uk"
    database = tmp_path / "xdg-data" / "gridshift" / "gridshift.db"
    assert config.database_url == f"sqlite:///{database}"
    assert config.daemon.log_dir == tmp_path / "xdg-state" / "gridshift" / "logs"
    assert config.daemon.refresh_every == timedelta(minutes=30)
    assert config.daemon.tick == timedelta(seconds=5)
    assert config.daemon.kill_grace == timedelta(seconds=30)
    assert config.daemon.default_power_watts == 300


def test_lookup_order_flag_then_env_then_xdg_then_defaults(
    environ: dict[str, str], tmp_path: Path
) -> None:
    flag = write(tmp_path / "flag.toml", region_config("from_flag"))
    from_env = write(tmp_path / "env.toml", region_config("from_env"))
    write(tmp_path / "xdg-config" / "gridshift" / "config.toml", region_config("from_xdg"))

    with_env = {**environ, "GRIDSHIFT_CONFIG": str(from_env)}
    assert list(load_config(str(flag), with_env).regions) == ["from_flag"]
    assert list(load_config(None, with_env).regions) == ["from_env"]
    assert load_config(None, with_env).source == str(from_env)
    assert list(load_config(None, environ).regions) == ["from_xdg"]
    (tmp_path / "xdg-config" / "gridshift" / "config.toml").unlink()
    assert load_config(None, environ).source == BUILTIN


def test_the_documented_example_config_loads_as_documented(environ: dict[str, str]) -> None:
    config = load_config(str(DOCUMENTED_CONFIG), environ)
    assert list(config.regions) == ["gb"]
    assert config.daemon.refresh_every == timedelta(minutes=30)
    assert config.daemon.tick == timedelta(seconds=5)


def test_the_documented_example_config_names_every_key() -> None:
    """config/gridshift.toml documents every key the loader accepts (commented or set)."""
    text = DOCUMENTED_CONFIG.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([a-z_0-9]+)\s*=", text, flags=re.MULTILINE))
    accepted = (
        {"url"}
        | config_module._DAEMON_KEYS
        | config_module._REGION_KEYS
        | config_module._METRICS_KEYS
        | set().union(*config_module._PROVIDER_KEYS.values())
    )
    assert sorted(accepted - documented) == []


def test_csv_path_relative_to_the_config_file(environ: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "conf" / "data.csv", "start,end,gco2_per_kwh\n")
    path = write(tmp_path / "conf" / "c.toml",
                 '[providers.f]\nkind = "csv"\npath = "data.csv"\n'
                 '[regions.r]\nprovider = "f"\nzone = "z"\n')
    assert load_config(str(path), environ).providers["f"].path == tmp_path / "conf" / "data.csv"


GOOD_REGION = '[providers.uk]\nkind = "carbonintensity_uk"\n[regions.gb]\nprovider = "uk"\n'


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[daemon]\ntik = \"5s\"\n" + GOOD_REGION, "daemon.tik", "unknown key"),
        ("[databse]\nurl = \"x\"\n" + GOOD_REGION, "databse", "unknown key"),
        (GOOD_REGION + "colour = \"red\"\n", "regions.gb.colour", "unknown key"),
        ('[providers.uk]\nkind = "carbonintensity_uk"\napi_key = "k"\n'
         '[regions.gb]\nprovider = "uk"\n', "providers.uk.api_key", "unknown key"),
        ("[daemon]\ntick = \"5 minutes\"\n" + GOOD_REGION, "daemon.tick", "bad duration"),
        ("[daemon]\nkill_grace = 30\n" + GOOD_REGION, "daemon.kill_grace", "duration"),
        ('[providers.uk]\nkind = "carbonintensity_uk"\n[regions.gb]\nprovider = "ukk"\n',
         "regions.gb.provider", "unknown provider 'ukk'"),
        ('[providers.f]\nkind = "csv"\npath = "/nonexistent/intensity.csv"\n'
         '[regions.r]\nprovider = "f"\nzone = "z"\n', "providers.f.path", "no such file"),
        ('[providers.f]\nkind = "oracle"\n[regions.r]\nprovider = "f"\n',
         "providers.f.kind", "must be one of"),
        (GOOD_REGION + "slots = 0\n", "regions.gb.slots", "whole number"),
        (GOOD_REGION + "launcher = \"ssh box\"\n", "regions.gb.launcher", "list"),
        ("[database]\nurl = \"postgresql://x/db\"\n" + GOOD_REGION, "database.url",
         "postgresql+psycopg://"),
        ("[database]\nurl = \"mysql://u@h/db\"\n" + GOOD_REGION, "database.url",
         "sqlite:/// URL to a file or a postgresql+psycopg:// URL"),
        ("[database]\nurl = \"postgresql+psycopg://u@h\"\n" + GOOD_REGION, "database.url",
         "must name a database"),
        ("[database]\nurl = \"postgresql+psycopg://u@h/\"\n" + GOOD_REGION, "database.url",
         "must name a database"),
        ("[database]\nurl = \"postgresql+psycopg://u@[h/db\"\n" + GOOD_REGION,
         "database.url", "not a valid URL"),
        ("[regions\n", "-", "not valid TOML"),
        ("[daemon]\ndefault_power_watts = inf\n" + GOOD_REGION, "daemon.default_power_watts",
         "above zero"),
        ("[daemon]\ndefault_power_watts = 100001\n" + GOOD_REGION,
         "daemon.default_power_watts", "at most 100000"),
        ("[daemon]\nmax_points_per_refresh = 0\n" + GOOD_REGION,
         "daemon.max_points_per_refresh", "whole number"),
        ("[daemon]\nforecast_horizon = \"soon\"\n" + GOOD_REGION, "daemon.forecast_horizon",
         "bad duration"),
        ("[daemon]\nrequeue_exit_code = 0\n" + GOOD_REGION, "daemon.requeue_exit_code",
         "from 1 to 255"),
        ("[daemon]\nrequeue_exit_code = 256\n" + GOOD_REGION, "daemon.requeue_exit_code",
         "from 1 to 255"),
        ("[daemon]\nrequeue_exit_code = \"75\"\n" + GOOD_REGION, "daemon.requeue_exit_code",
         "from 1 to 255"),
        ("[database]\nurl = \"sqlite:///:memory:\"\n" + GOOD_REGION, "database.url",
         "in-memory"),
        ("[database]\nurl = \"sqlite:///\"\n" + GOOD_REGION, "database.url", "file"),
        (GOOD_REGION + 'launcher = ["ssh", "box\\u0000"]\n', "regions.gb.launcher[1]",
         "NUL byte"),
        ('[daemon]\nlog_dir = "/tmp/a\\u0000b"\n' + GOOD_REGION, "daemon.log_dir",
         "NUL byte"),
        (GOOD_REGION + "[metrics]\nlisten = \"9464\"\n", "metrics.listen", "host:port"),
        (GOOD_REGION + "[metrics]\nlisten = \"localhost:http\"\n", "metrics.listen",
         "host:port"),
        (GOOD_REGION + "[metrics]\nlisten = \"127.0.0.1:70000\"\n", "metrics.listen",
         "1 to 65535"),
        (GOOD_REGION + "[metrics]\nlisten = 9464\n", "metrics.listen", "host:port"),
        (GOOD_REGION + "[metrics]\nport = 9464\n", "metrics.port", "unknown key"),
        (GOOD_REGION + "embodied_gco2 = -1\nlifetime = \"4y\"\n", "regions.gb.embodied_gco2",
         ">= 0"),
        (GOOD_REGION + "embodied_gco2 = \"lots\"\nlifetime = \"4y\"\n",
         "regions.gb.embodied_gco2", ">= 0"),
        (GOOD_REGION + "embodied_gco2 = 1000\n", "regions.gb.lifetime", "together"),
        (GOOD_REGION + "lifetime = \"4y\"\n", "regions.gb.embodied_gco2", "together"),
        (GOOD_REGION + "embodied_gco2 = 1000\nlifetime = \"four years\"\n",
         "regions.gb.lifetime", "bad duration"),
    ],
)
def test_bad_config_names_file_key_and_problem(
    environ: dict[str, str], tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ")
    assert problem in message


def test_metrics_listen_and_embodied_hardware_are_read(
    environ: dict[str, str], tmp_path: Path
) -> None:
    path = write(tmp_path / "good.toml", GOOD_REGION + 'embodied_gco2 = 1500000\nlifetime = "4y"\n'
                 '[metrics]\nlisten = "[::1]:9464"\n')
    config = load_config(str(path), environ)
    assert config.metrics.listen == ("::1", 9464)
    assert config.regions["gb"].embodied_gco2 == 1_500_000.0
    assert config.regions["gb"].lifetime == timedelta(days=4 * 365)
    plain = load_config(str(write(tmp_path / "plain.toml", GOOD_REGION)), environ)
    assert plain.metrics.listen is None and plain.regions["gb"].embodied_gco2 is None


def test_missing_config_file_is_named(environ: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(None, {**environ, "GRIDSHIFT_CONFIG": str(missing)})


@pytest.mark.parametrize(
    ("daemon_table", "key"),
    [('tick = "soon"', "daemon.tick"), ('refresh_every = "0m"', "daemon.refresh_every")],
)
def test_cli_exits_2_with_one_message_for_a_bad_config(
    make_workspace: Callable[..., Workspace], daemon_table: str, key: str
) -> None:
    workspace = make_workspace(GOOD_REGION, daemon=daemon_table)
    result = workspace.cli("list")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(workspace.config_path) in lines[0] and key in lines[0]
    assert not workspace.db_path.exists()


def configuration_page() -> str:
    return (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_the_configuration_page_names_every_key() -> None:
    section = configuration_page()
    accepted = (
        {"url"}
        | config_module._DAEMON_KEYS
        | config_module._REGION_KEYS
        | config_module._METRICS_KEYS
        | set().union(*config_module._PROVIDER_KEYS.values())
    )
    missing = [key for key in sorted(accepted) if not re.search(rf"[.`]{key}`", section)]
    assert missing == []


def test_the_configuration_pages_example_is_valid(environ: dict[str, str],
                                                  tmp_path: Path) -> None:
    block = configuration_page().split("```toml\n", 1)[1].split("```", 1)[0]
    csv_file = write(tmp_path / "gpu-box-intensity.csv", "start,end,gco2_per_kwh\n")
    path = write(tmp_path / "example.toml",
                 block.replace("/etc/gridshift/gpu-box-intensity.csv", str(csv_file)))
    config = load_config(str(path), environ)
    assert list(config.regions) == ["gb", "gpu"]
    assert config.regions["gpu"].launcher == ("ssh", "gpu-box", "--")


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o604])
def test_a_config_holding_a_secret_must_be_owner_only(
    environ: dict[str, str], tmp_path: Path, mode: int
) -> None:
    path = write(tmp_path / "c.toml", '[providers.em]\nkind = "electricitymaps"\n'
                 'token = "em-token"\n[regions.de]\nprovider = "em"\nzone = "DE"\n')
    assert load_config(str(path), environ).providers["em"].token == "em-token"  # 0600
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ)
    assert str(caught.value).startswith(f"{path}: providers: ")
    assert f"chmod 600 {path}" in str(caught.value) and "em-token" not in str(caught.value)


def test_a_database_password_makes_the_config_owner_only(
    environ: dict[str, str], tmp_path: Path
) -> None:
    without = write(tmp_path / "open.toml", '[database]\nurl = "postgresql+psycopg://'
                    'gridshift@db/gridshift"\n' + GOOD_REGION)
    without.chmod(0o644)  # no password: libpq finds it in ~/.pgpass or PGPASSWORD
    assert load_config(str(without), environ).database_url.endswith("@db/gridshift")
    path = write(tmp_path / "c.toml", '[database]\nurl = "postgresql+psycopg://gridshift:'
                 'pg-secret@db/gridshift"\n' + GOOD_REGION)
    path.chmod(0o640)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ)
    assert str(caught.value).startswith(f"{path}: database.url: ")
    assert f"chmod 600 {path}" in str(caught.value) and "pg-secret" not in str(caught.value)


def test_a_relative_database_path_is_relative_to_the_config_file(
    make_workspace: Callable[..., Workspace], tmp_path: Path
) -> None:
    """Every command finds the same database, whatever its working directory."""
    workspace = make_workspace(GOOD_REGION)
    text = workspace.config_path.read_text(encoding="utf-8")
    text = re.sub(r'url = "[^"]*"', 'url = "sqlite:///data/gs.db"', text)
    workspace.config_path.write_text(text, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "scheduler", "--config", str(workspace.config_path),
         "db", "upgrade"], capture_output=True, text=True, env=workspace.env, cwd=elsewhere,
        timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "data" / "gs.db").is_file()
    assert not (elsewhere / "data").exists()
    assert workspace.config().database_url == f"sqlite:///{tmp_path / 'data' / 'gs.db'}"


def test_a_postgresql_url_is_taken_as_it_is(environ: dict[str, str], tmp_path: Path) -> None:
    url = "postgresql+psycopg://gridshift@db.example.org:5433/gridshift?sslmode=require"
    path = write(tmp_path / "pg.toml", f'[database]\nurl = "{url}"\n' + GOOD_REGION)
    assert load_config(str(path), environ).database_url == url
