"""TOML config -> frozen dataclasses, validated once; every error names file and key.

Lookup order: ``--config FILE``, env ``GRIDSHIFT_CONFIG``, ``$XDG_CONFIG_HOME/gridshift/
config.toml``, ``/etc/gridshift/config.toml``, else built-in defaults (Great Britain
national from the UK Carbon Intensity API). ``config/gridshift.toml`` documents every key.
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scheduler.errors import BadInput, ConfigError
from scheduler.timespec import parse_duration

BUILTIN = "<built-in defaults>"
# SQLAlchemy's name for PostgreSQL through psycopg 3 (the ``postgres`` extra).
POSTGRESQL_SCHEME = "postgresql+psycopg"

PROVIDER_KINDS = ("carbonintensity_uk", "csv", "electricitymaps", "watttime", "carbon_aware_sdk",
                  "replay")
DEFAULT_BASE_URLS = {
    "carbonintensity_uk": "https://api.carbonintensity.org.uk",
    "electricitymaps": "https://api.electricitymap.org",
    "watttime": "https://api.watttime.org",
    "carbon_aware_sdk": "http://localhost:8080",
}
# The signal each kind publishes: average intensity or marginal (MOER) emissions.
DEFAULT_SIGNALS = {
    "carbonintensity_uk": "average",
    "csv": "average",
    "electricitymaps": "average",
    "watttime": "marginal",
    "carbon_aware_sdk": "marginal",
    "replay": "average",
}
SECRET_ENV = {
    ("electricitymaps", "token"): "GRIDSHIFT_ELECTRICITYMAPS_TOKEN",
    ("watttime", "username"): "GRIDSHIFT_WATTTIME_USERNAME",
    ("watttime", "password"): "GRIDSHIFT_WATTTIME_PASSWORD",
}
_PROVIDER_KEYS: dict[str, set[str]] = {
    "carbonintensity_uk": {"kind", "base_url", "timeout"},
    "csv": {"kind", "path", "signal", "basis"},
    "electricitymaps": {"kind", "base_url", "timeout", "token", "basis"},
    "watttime": {"kind", "base_url", "timeout", "username", "password"},
    "carbon_aware_sdk": {"kind", "base_url", "timeout", "signal", "basis"},
    "replay": {"kind", "horizon"},
}
# The replay provider's bundled data is Electricity Maps' life-cycle intensity; its basis
# label says it is replayed wherever a basis is shown.
REPLAY_BASIS = "lifecycle replay"
DEFAULT_REPLAY_HORIZON = timedelta(hours=48)
_DAEMON_KEYS = {
    "refresh_every",
    "tick",
    "log_dir",
    "default_power_watts",
    "kill_grace",
    "actuals_every",
    "actuals_give_up",
    "retention",
    "max_log_bytes",
    "powercap_root",
    "socket",
    "admin_group",
    "max_points_per_refresh",
    "forecast_horizon",
    "requeue_exit_code",
}
_REGION_KEYS = {"provider", "zone", "slots", "launcher", "embodied_gco2", "lifetime", "executor",
                "partition", "sbatch_args", "time_margin", "slurm_conf"}
EXECUTORS = ("local", "slurm")
# Slurm's time limit for a job: its declared duration plus this share of it.
DEFAULT_TIME_MARGIN_PERCENT = 10.0
_METRICS_KEYS = {"listen"}
# The most power one job may declare: a rack of eight GPUs draws about 10 kW.
MAX_POWER_WATTS = 100_000.0
# A week of 5-minute data is 2,016 points per zone; the default leaves a wide margin.
DEFAULT_MAX_POINTS = 20_000


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str | None = None
    path: Path | None = None
    signal: str = "average"
    basis: str | None = None
    timeout: timedelta = timedelta(seconds=10)
    # From [daemon]: a fetch returning more than max_points is refused; forecast points
    # ending before now - forecast_lookback (daemon.retention) or starting after now +
    # forecast_horizon are not stored.
    max_points: int = DEFAULT_MAX_POINTS
    forecast_lookback: timedelta = timedelta(days=30)
    forecast_horizon: timedelta = timedelta(days=7)
    # Secrets never appear in repr(), logs or output.
    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    horizon: timedelta | None = None  # replay: how far ahead a forecast reaches

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.username, self.password) if s]


@dataclass(frozen=True)
class RegionConfig:
    name: str
    provider: str
    zone: str
    slots: int = 1
    launcher: tuple[str, ...] = ()
    # The hardware's embodied emissions (gCO2eq) and lifetime: the SCI's embodied term.
    embodied_gco2: float | None = None
    lifetime: timedelta | None = None
    # "local" runs jobs on this machine (or through ``launcher``); "slurm" hands them to a
    # Slurm cluster (scheduler/executors/slurm.py) with the keys below.
    executor: str = "local"
    partition: str | None = None
    sbatch_args: tuple[str, ...] = ()
    time_margin_percent: float = DEFAULT_TIME_MARGIN_PERCENT
    # The cluster's slurm.conf (SLURM_CONF for every Slurm command); None: Slurm's default.
    slurm_conf: Path | None = None


@dataclass(frozen=True)
class DaemonConfig:
    refresh_every: timedelta = timedelta(minutes=30)
    tick: timedelta = timedelta(seconds=5)
    log_dir: Path = field(default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "logs")
    default_power_watts: float = 300.0
    kill_grace: timedelta = timedelta(seconds=30)
    actuals_every: timedelta = timedelta(hours=1)
    actuals_give_up: timedelta = timedelta(days=7)
    retention: timedelta = timedelta(days=30)
    max_log_bytes: int = 100 * 1024 * 1024
    # Where the RAPL energy counters are (scheduler/energy.py); elsewhere in containers.
    powercap_root: Path = Path("/sys/class/powercap")
    # The local API's Unix socket; None = default_socket_path() of the daemon's user.
    socket: Path | None = None
    # Members of this group (and root) may cancel other users' jobs.
    admin_group: str | None = None
    # Bounds on what one forecast refresh stores: points, and how far ahead.
    max_points_per_refresh: int = DEFAULT_MAX_POINTS
    forecast_horizon: timedelta = timedelta(days=7)
    # The exit code by which a checkpoint-mode job says it saved its state after the
    # checkpoint signal and wants to be relaunched at its next chunk (EX_TEMPFAIL).
    requeue_exit_code: int = 75

    def socket_path(self, uid: int | None = None,
                    environ: Mapping[str, str] | None = None) -> Path:
        """Where the daemon listens: ``socket`` if configured, else the default for ``uid``
        (this process's by default)."""
        if self.socket is not None:
            return self.socket
        return default_socket_path(os.getuid() if uid is None else uid, environ)


@dataclass(frozen=True)
class MetricsConfig:
    # Where the daemon serves /metrics (host, port); None: not served.
    listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class Config:
    source: str
    database_url: str
    daemon: DaemonConfig
    providers: Mapping[str, ProviderConfig]
    regions: Mapping[str, RegionConfig]
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def region(self, name: str) -> RegionConfig:
        try:
            return self.regions[name]
        except KeyError:
            known = ", ".join(self.regions) or "none"
            raise BadInput(f"unknown region {name!r} (configured: {known})") from None

    def provider_for(self, region: str) -> ProviderConfig:
        return self.providers[self.region(region).provider]

    def signal_of(self, region: str) -> str:
        return self.provider_for(region).signal

    def shared_signal(self, regions: Sequence[str]) -> str:
        """The one signal ``regions`` share; BadInput when they mix average and marginal."""
        signals = {r: self.signal_of(r) for r in regions}
        if len(set(signals.values())) > 1:
            listed = ", ".join(f"{r} ({s})" for r, s in signals.items())
            raise BadInput(
                f"regions mix average and marginal intensity signals, which cannot be "
                f"compared: {listed}; submit with --region for regions of one signal"
            )
        return next(iter(signals.values()))

    def secrets(self) -> list[str]:
        return [s for p in self.providers.values() for s in p.secrets()]


def _xdg(variable: str, fallback: str, environ: Mapping[str, str] | None = None) -> Path:
    base = (os.environ if environ is None else environ).get(variable) or str(
        Path.home() / fallback)
    return Path(base) / "gridshift"


SYSTEM_SOCKET = Path("/run/gridshift/gridshift.sock")
# The system daemon's config: the last place looked before the built-in defaults.
SYSTEM_CONFIG = Path("/etc/gridshift/config.toml")


def default_socket_path(uid: int, environ: Mapping[str, str] | None = None) -> Path:
    """The system daemon's socket for root; a per-user daemon's in $XDG_RUNTIME_DIR (or a
    private directory under /tmp where no runtime directory is set)."""
    if uid == 0:
        return SYSTEM_SOCKET
    runtime = (os.environ if environ is None else environ).get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "gridshift" / "gridshift.sock"
    return Path(f"/tmp/gridshift-{uid}") / "gridshift.sock"


def replay_zones() -> list[str]:
    """The zones a replay provider serves: one per data file bundled in scheduler/data."""
    from importlib import resources

    data = resources.files("scheduler").joinpath("data")
    return sorted(entry.name.removesuffix(".csv") for entry in data.iterdir()
                  if entry.name.endswith(".csv"))


def _beside_config(path: Path, source: str) -> Path:
    """A relative path in a config file is relative to that file's directory."""
    if path.is_absolute() or source == BUILTIN:
        return path
    return Path(os.path.abspath(Path(source).parent / path))


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    return f"sqlite:///{_xdg('XDG_DATA_HOME', '.local/share', environ) / 'gridshift.db'}"


def find_config_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """Where the config comes from, or None for the built-in defaults."""
    if explicit:
        return Path(explicit)
    if environ.get("GRIDSHIFT_CONFIG"):
        return Path(environ["GRIDSHIFT_CONFIG"])
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidate = Path(xdg) / "gridshift" / "config.toml"
    if candidate.exists():
        return candidate
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def load_config(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Find, read and validate the config; raise ConfigError naming file and key."""
    env = os.environ if environ is None else environ
    path = find_config_path(explicit, env)
    if path is None:
        return parse_config({}, BUILTIN, env)
    source = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as error:
        raise ConfigError(source, "-", f"cannot read: {error.strerror or error}") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(source, "-", f"not valid TOML: {error}") from None
    config = parse_config(raw, source, env)
    _refuse_shared_secrets(path, raw)
    return config


def _refuse_shared_secrets(path: Path, raw: Mapping[str, Any]) -> None:
    """A config holding a credential must be the owner's alone (group access included):
    a provider's token or password, or a password in the database URL."""
    providers = raw.get("providers", {})
    holds_secret = any(
        isinstance(p, dict) and ({"token", "password"} & p.keys()) for p in providers.values()
    )
    # Called after parse_config: a URL here is a valid one.
    url = raw.get("database", {}).get("url")
    key = "database.url" if isinstance(url, str) and urlsplit(url).password else "providers"
    others = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH
    if (holds_secret or key == "database.url") and path.stat().st_mode & others:
        raise ConfigError(
            str(path), key, f"holds a token or password but other users can read "
            f"it (mode {stat.S_IMODE(path.stat().st_mode):04o}); run: chmod 600 {path}"
        )


def parse_config(raw: Mapping[str, Any], source: str, environ: Mapping[str, str]) -> Config:
    """Validate a parsed TOML document (``{}`` gives the built-in defaults)."""
    _refuse_nul_bytes(raw, source, "")
    _check_keys(raw, {"database", "daemon", "providers", "regions", "metrics"}, source, "")
    database = _table(raw, "database", source)
    _check_keys(database, {"url"}, source, "database.")
    url = _database_url(database.get("url", default_database_url(environ)), source)

    daemon = _parse_daemon(_table(raw, "daemon", source), source, environ)

    raw_providers = _table(raw, "providers", source)
    raw_regions = _table(raw, "regions", source)
    if not raw_providers and not raw_regions:
        raw_providers = {"uk": {"kind": "carbonintensity_uk"}}
        raw_regions = {"gb": {"provider": "uk", "zone": "national"}}
    providers = {
        name: _parse_provider(name, _subtable(raw_providers, name, source, "providers"),
                              source, environ, daemon)
        for name in raw_providers
    }
    regions = {
        name: _parse_region(name, _subtable(raw_regions, name, source, "regions"), providers,
                            source)
        for name in raw_regions
    }
    if not regions:
        raise ConfigError(source, "regions", "configure at least one region")
    metrics = _parse_metrics(_table(raw, "metrics", source), source)
    return Config(source, url, daemon, providers, regions, metrics)


def _parse_metrics(table: Mapping[str, Any], source: str) -> MetricsConfig:
    _check_keys(table, _METRICS_KEYS, source, "metrics.")
    if "listen" not in table:
        return MetricsConfig()
    listen = table["listen"]
    problem = 'must be "host:port" with a port from 1 to 65535, e.g. "127.0.0.1:9464"'
    if not isinstance(listen, str):
        raise ConfigError(source, "metrics.listen", problem)
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address: "[::1]:9464"
        host = host[1:-1]
    if not host or any(c.isspace() for c in host) or not (port.isdigit()
                                                          and 1 <= int(port) <= 65535):
        raise ConfigError(source, "metrics.listen", problem)
    return MetricsConfig((host, int(port)))


def _refuse_nul_bytes(value: Any, source: str, key: str) -> None:
    """No string in the config may hold a NUL byte: no path, argument or name can."""
    if isinstance(value, str) and "\x00" in value:
        raise ConfigError(source, key or "-", "contains a NUL byte")
    if isinstance(value, dict):
        for name, item in value.items():
            dotted = f"{key}.{name}" if key else str(name)
            if "\x00" in str(name):
                raise ConfigError(source, dotted, "contains a NUL byte")
            _refuse_nul_bytes(item, source, dotted)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul_bytes(item, source, f"{key}[{index}]")


def _database_url(url: Any, source: str) -> str:
    """An ``sqlite:///`` URL to a file, or a ``postgresql+psycopg://`` URL naming a
    database. A relative SQLite path is relative to the config file's directory (not to
    each command's working directory); an in-memory database is refused, since every
    command would see its own empty one."""
    if isinstance(url, str) and url.startswith(POSTGRESQL_SCHEME + "://"):
        try:
            database = urlsplit(url).path.strip("/")
        except ValueError as error:  # a malformed host, such as an unclosed "[" (IPv6)
            raise ConfigError(source, "database.url", f"not a valid URL: {error}") from None
        if not database:
            raise ConfigError(source, "database.url",
                              f"must name a database: {POSTGRESQL_SCHEME}://USER@HOST/NAME")
        return url
    if not isinstance(url, str) or not url.startswith("sqlite:///"):
        raise ConfigError(source, "database.url", f"must be an sqlite:/// URL to a file or "
                                                  f"a {POSTGRESQL_SCHEME}:// URL")
    location = url.removeprefix("sqlite:///")
    database, _separator, _query = location.partition("?")
    if not database or database == ":memory:" or database.startswith("file:") \
            or "mode=memory" in url:
        raise ConfigError(source, "database.url", "must name a database file (an in-memory "
                                                  "database would lose every job)")
    if Path(database).is_absolute() or source == BUILTIN:
        return url
    return f"sqlite:///{_beside_config(Path(location), source)}"


def _parse_daemon(
    table: Mapping[str, Any], source: str, environ: Mapping[str, str]
) -> DaemonConfig:
    _check_keys(table, _DAEMON_KEYS, source, "daemon.")
    defaults = DaemonConfig()
    durations = {
        key: _duration(table, key, source, "daemon.", getattr(defaults, key))
        for key in ("refresh_every", "tick", "kill_grace", "actuals_every", "actuals_give_up",
                    "retention", "forecast_horizon")
    }
    log_dir = table.get("log_dir", _xdg("XDG_STATE_HOME", ".local/state", environ) / "logs")
    if not isinstance(log_dir, (str, Path)) or not str(log_dir):
        raise ConfigError(source, "daemon.log_dir", "must be a path")
    power = table.get("default_power_watts", defaults.default_power_watts)
    if isinstance(power, bool) or not isinstance(power, (int, float)) \
            or not (math.isfinite(power) and 0 < power <= MAX_POWER_WATTS):
        raise ConfigError(source, "daemon.default_power_watts",
                          f"must be a number of watts above zero, at most {MAX_POWER_WATTS:.0f}")
    max_points = table.get("max_points_per_refresh", defaults.max_points_per_refresh)
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise ConfigError(source, "daemon.max_points_per_refresh",
                          "must be a whole number >= 1")
    max_log = table.get("max_log_bytes", defaults.max_log_bytes)
    if isinstance(max_log, bool) or not isinstance(max_log, int) or max_log < 1024:
        raise ConfigError(source, "daemon.max_log_bytes", "must be a whole number >= 1024")
    powercap_root = table.get("powercap_root", str(defaults.powercap_root))
    if not isinstance(powercap_root, str) or not powercap_root:
        raise ConfigError(source, "daemon.powercap_root", "must be a path")
    socket_path = table.get("socket")
    if socket_path is not None and not (isinstance(socket_path, str)
                                        and socket_path.startswith("/")):
        raise ConfigError(source, "daemon.socket", "must be an absolute path")
    if socket_path is not None and len(socket_path.encode()) > 100:
        raise ConfigError(source, "daemon.socket",
                          "must be at most 100 bytes long (a Unix socket's path limit)")
    admin_group = table.get("admin_group")
    if admin_group is not None and not (isinstance(admin_group, str) and admin_group):
        raise ConfigError(source, "daemon.admin_group", "must be a group name")
    requeue = table.get("requeue_exit_code", defaults.requeue_exit_code)
    if isinstance(requeue, bool) or not isinstance(requeue, int) or not 1 <= requeue <= 255:
        raise ConfigError(source, "daemon.requeue_exit_code",
                          "must be a whole number from 1 to 255")
    return DaemonConfig(
        socket=None if socket_path is None else Path(socket_path),
        admin_group=admin_group,
        log_dir=_beside_config(Path(log_dir).expanduser(), source),
        default_power_watts=float(power),
        max_log_bytes=max_log,
        powercap_root=Path(powercap_root).expanduser(),
        max_points_per_refresh=max_points,
        requeue_exit_code=requeue,
        **durations,
    )


def _parse_provider(
    name: str, table: Mapping[str, Any], source: str, environ: Mapping[str, str],
    daemon: DaemonConfig,
) -> ProviderConfig:
    prefix = f"providers.{name}."
    kind = table.get("kind")
    if kind not in PROVIDER_KINDS:
        raise ConfigError(source, prefix + "kind", f"must be one of {', '.join(PROVIDER_KINDS)}")
    _check_keys(table, _PROVIDER_KEYS[kind], source, prefix)
    values: dict[str, Any] = {"name": name, "kind": kind,
                              "max_points": daemon.max_points_per_refresh,
                              "forecast_lookback": daemon.retention,
                              "forecast_horizon": daemon.forecast_horizon}
    for key in ("base_url", "path", "token", "username", "password", "signal", "basis"):
        if key in table and not (isinstance(table[key], str) and table[key]):
            raise ConfigError(source, prefix + key, "must be a non-empty string")
    if kind == "replay":
        values["horizon"] = _duration(table, "horizon", source, prefix, DEFAULT_REPLAY_HORIZON)
        values["basis"] = REPLAY_BASIS
    elif kind != "csv":
        base_url = table.get("base_url", DEFAULT_BASE_URLS[kind])
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(source, prefix + "base_url", "must start with http:// or https://")
        values["base_url"] = base_url.rstrip("/")
        values["timeout"] = _duration(table, "timeout", source, prefix, timedelta(seconds=10))
    else:
        if "path" not in table:
            raise ConfigError(source, prefix + "path", "a csv provider needs a path")
        csv_path = Path(table["path"]).expanduser()
        if not csv_path.is_absolute() and source != BUILTIN:
            csv_path = Path(source).parent / csv_path
        if not csv_path.is_file():
            raise ConfigError(source, prefix + "path", f"no such file: {csv_path}")
        values["path"] = csv_path
    signal = table.get("signal", DEFAULT_SIGNALS[kind])
    if signal not in ("average", "marginal"):
        raise ConfigError(source, prefix + "signal", "must be 'average' or 'marginal'")
    values["signal"] = signal
    if "basis" in table:
        if table["basis"] not in ("lifecycle", "direct"):
            raise ConfigError(source, prefix + "basis", "must be 'lifecycle' or 'direct'")
        values["basis"] = table["basis"]
    for (secret_kind, key), variable in SECRET_ENV.items():
        if kind == secret_kind:
            values[key] = table.get(key) or environ.get(variable) or None
    return ProviderConfig(**values)


def _parse_region(
    name: str, table: Mapping[str, Any], providers: Mapping[str, ProviderConfig], source: str
) -> RegionConfig:
    prefix = f"regions.{name}."
    _check_keys(table, _REGION_KEYS, source, prefix)
    provider = table.get("provider")
    if not isinstance(provider, str) or provider not in providers:
        known = ", ".join(providers) or "none"
        raise ConfigError(source, prefix + "provider",
                          f"unknown provider {provider!r} (configured: {known})")
    kind = providers[provider].kind
    zone = table.get("zone", "national" if kind == "carbonintensity_uk" else "")
    if not isinstance(zone, str) or (not zone and kind != "csv"):
        raise ConfigError(source, prefix + "zone", "must be a non-empty string")
    if kind == "replay" and zone not in replay_zones():
        raise ConfigError(source, prefix + "zone",
                          f"must be a bundled zone: {', '.join(replay_zones())}")
    if kind == "carbonintensity_uk" and not _valid_uk_zone(zone):
        raise ConfigError(source, prefix + "zone",
                          "must be 'national', a region id 1..17 or 'postcode:OUTCODE'")
    slots = table.get("slots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ConfigError(source, prefix + "slots", "must be a whole number >= 1")
    launcher = table.get("launcher", [])
    if not isinstance(launcher, list) or not all(isinstance(a, str) and a for a in launcher):
        raise ConfigError(source, prefix + "launcher", "must be a list of non-empty strings")
    embodied = table.get("embodied_gco2")
    if embodied is not None and (isinstance(embodied, bool) or not isinstance(
            embodied, (int, float)) or not 0 <= embodied < math.inf):
        raise ConfigError(source, prefix + "embodied_gco2", "must be a number >= 0 (gCO2eq)")
    lifetime = _duration(table, "lifetime", source, prefix, timedelta(0)) or None
    if (embodied is None) != (lifetime is None):
        missing = "lifetime" if lifetime is None else "embodied_gco2"
        raise ConfigError(source, prefix + missing,
                          "give embodied_gco2 and lifetime together (the SCI's embodied term)")
    return RegionConfig(name, provider, zone, slots, tuple(launcher),
                        None if embodied is None else float(embodied), lifetime,
                        **_parse_executor(table, source, prefix))


def _parse_executor(table: Mapping[str, Any], source: str, prefix: str) -> dict[str, Any]:
    """A region's executor and, for "slurm", how its jobs are submitted."""
    executor = table.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(source, prefix + "executor", f"must be one of {', '.join(EXECUTORS)}")
    slurm_keys = ("partition", "sbatch_args", "time_margin", "slurm_conf")
    if executor != "slurm":
        for key in slurm_keys:
            if key in table:
                raise ConfigError(source, prefix + key, 'only for executor = "slurm"')
        return {}
    if table.get("launcher"):
        raise ConfigError(source, prefix + "launcher",
                          'not with executor = "slurm": Slurm decides where a job runs')
    partition = table.get("partition")
    if partition is not None and (not isinstance(partition, str) or not partition
                                  or any(c.isspace() for c in partition)):
        raise ConfigError(source, prefix + "partition", "must be a partition name")
    sbatch_args = table.get("sbatch_args", [])
    if not isinstance(sbatch_args, list) or not all(
            isinstance(a, str) and a.startswith("-") for a in sbatch_args):
        raise ConfigError(source, prefix + "sbatch_args",
                          'must be a list of sbatch options, e.g. ["--account=ml"]')
    margin = table.get("time_margin", f"{DEFAULT_TIME_MARGIN_PERCENT:g}%")
    try:
        assert isinstance(margin, str) and margin.endswith("%")
        percent = float(margin.removesuffix("%"))
        assert 0 <= percent <= 1000
    except (AssertionError, ValueError):
        raise ConfigError(source, prefix + "time_margin",
                          'must be a percentage from "0%" to "1000%", like "10%"') from None
    slurm_conf = table.get("slurm_conf")
    if slurm_conf is not None:
        if not isinstance(slurm_conf, str) or not slurm_conf:
            raise ConfigError(source, prefix + "slurm_conf", "must be a path")
        slurm_conf = _beside_config(Path(slurm_conf), source)
    return {"executor": executor, "partition": partition, "sbatch_args": tuple(sbatch_args),
            "time_margin_percent": percent, "slurm_conf": slurm_conf}


def _valid_uk_zone(zone: str) -> bool:
    if zone == "national":
        return True
    if zone.startswith("postcode:"):
        outcode = zone.removeprefix("postcode:")
        return 2 <= len(outcode) <= 4 and outcode.isalnum()
    return zone.isdigit() and 1 <= int(zone) <= 17


def _check_keys(table: Mapping[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            allowed_keys = ", ".join(sorted(allowed))
            raise ConfigError(source, prefix + key, f"unknown key (allowed: {allowed_keys})")


def _table(raw: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(source, key, "must be a table")
    return value


def _subtable(raw: Mapping[str, Any], name: str, source: str, parent: str) -> Mapping[str, Any]:
    value = raw[name]
    if not isinstance(value, dict):
        raise ConfigError(source, f"{parent}.{name}", "must be a table")
    return value


def _duration(
    table: Mapping[str, Any], key: str, source: str, prefix: str, default: timedelta
) -> timedelta:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(source, prefix + key, "must be a duration string like \"30m\"")
    try:
        return parse_duration(value)
    except BadInput as error:
        raise ConfigError(source, prefix + key, str(error)) from None
