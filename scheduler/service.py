"""Running gridshift under systemd: the unit file, its installation, and sd_notify.

The daemon talks to systemd with the standard library only: ``notify`` sends one
datagram to ``$NOTIFY_SOCKET`` (sd_notify(3)), and ``watchdog_interval`` reads
``$WATCHDOG_USEC`` / ``$WATCHDOG_PID`` (sd_watchdog_enabled(3)). Outside systemd both are
no-ops. ``render_unit`` writes the unit for this installation's paths;
``config/gridshift.service`` is the same unit for a system-wide install under /opt.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from scheduler.errors import GridshiftError

log = logging.getLogger("gridshift.service")

UNIT_NAME = "gridshift.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
# The system unit runs as root, so that it can run each job as its submitter.
DEFAULT_SERVICE_USER = "root"
RUNTIME_DIRECTORY = "gridshift"  # /run/gridshift: the local API's socket
WATCHDOG_SEC = 120


def notify(message: str) -> bool:
    """sd_notify(3) over $NOTIFY_SOCKET; False (and no error) outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as error:
        log.warning("cannot notify systemd at %s: %s", address, error)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> timedelta | None:
    """How often systemd expects WATCHDOG=1 (half of WatchdogSec=), or None if disabled.

    As sd_watchdog_enabled(3): ``WATCHDOG_USEC`` holds the timeout, and a
    ``WATCHDOG_PID`` naming another process means the watchdog is not ours.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return timedelta(microseconds=int(usec)) / 2


@dataclass(frozen=True)
class UnitPaths:
    """What the unit needs to know about this installation."""

    exec_start: list[str]
    config_path: Path | None
    working_directory: Path
    user: str | None  # None for a --user unit (it runs as the user who owns it)


def this_installation(config_path: str | None, user_unit: bool,
                      service_user: str = DEFAULT_SERVICE_USER) -> UnitPaths:
    """The daemon command of the running interpreter, with an absolute config path."""
    script = Path(sys.executable).parent / "gridshift"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scheduler"]
    config = Path(config_path).resolve() if config_path else None
    if config is not None:
        command += ["--config", str(config)]
    command.append("daemon")
    home = Path.home() if user_unit else Path("/var/lib/gridshift")
    return UnitPaths(command, config, home, None if user_unit else service_user)


def render_unit(paths: UnitPaths) -> str:
    """The systemd unit text for ``paths`` (a system unit when ``paths.user`` is set)."""
    lines = [
        "# gridshift: carbon-aware job scheduler (one daemon per database).",
        "# Installed by `gridshift service install`; see docs/service.md.",
        "[Unit]",
        "Description=gridshift carbon-aware job scheduler",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "# The daemon sends READY=1 once it holds the lock and has reconciled its jobs,",
        "# STATUS= lines for `systemctl status`, WATCHDOG=1 while its loop is alive, and",
        "# STOPPING=1 on SIGTERM.",
        "Type=notify",
        "NotifyAccess=main",
        f"WatchdogSec={WATCHDOG_SEC}",
        "Restart=on-failure",
        "RestartSec=5",
    ]
    if paths.user is not None:
        if paths.user == "root":
            lines += [
                "# Root, so that each job runs as the user who submitted it (uid, groups,",
                "# HOME, environment captured at submission); jobs never run as root unless",
                "# root submitted them. Users reach the daemon through its socket only.",
            ]
        else:
            lines += [
                "# A dedicated account: it accepts only its own requests, and every job",
                "# runs as this user.",
                f"User={paths.user}",
                f"Group={paths.user}",
            ]
        lines += [
            "# /var/lib/gridshift (database, logs), owned by the daemon's user.",
            "StateDirectory=gridshift",
            "StateDirectoryMode=0700",
            f"# /run/{RUNTIME_DIRECTORY}: the local API's socket, gridshift.sock.",
            f"RuntimeDirectory={RUNTIME_DIRECTORY}",
            "RuntimeDirectoryMode=0755",
            "# Jobs keep running across daemon restarts: keep the socket's directory too.",
            "RuntimeDirectoryPreserve=yes",
        ]
    lines += [
        f"WorkingDirectory={paths.working_directory}",
        f"ExecStart={shlex.join(paths.exec_start)}",
        "# Training jobs run for days in their own sessions and outlive the daemon; a",
        "# restarted daemon re-adopts them from the database. The default",
        "# KillMode=control-group would kill every process of the unit, the jobs",
        "# included, at each restart or upgrade: only the daemon itself is stopped.",
        "KillMode=process",
        "# SIGTERM: the daemon stops taking work and exits within seconds.",
        "TimeoutStopSec=30",
        "# Files the daemon creates are owner-only. Each job runs with the umask its",
        "# submitter had.",
        "UMask=0077",
        "Environment=PYTHONUNBUFFERED=1",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if paths.user is not None else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Installed:
    path: Path
    next_steps: list[str]


def unit_path(user_unit: bool, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if not user_unit:
        return SYSTEM_UNIT_DIR / UNIT_NAME
    config_home = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user" / UNIT_NAME


def next_steps(user_unit: bool) -> list[str]:
    scope = "systemctl --user" if user_unit else "systemctl"
    steps = [f"{scope} daemon-reload", f"{scope} enable --now {UNIT_NAME}",
             f"{scope} status {UNIT_NAME}"]
    if user_unit:
        steps.append("loginctl enable-linger \"$USER\"  # keep it running after you log out")
    return steps


def install(unit_text: str, user_unit: bool, environ: Mapping[str, str] | None = None
            ) -> Installed:
    """Write the unit file; raise GridshiftError with the way out when that is not allowed."""
    path = unit_path(user_unit, environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(unit_text, encoding="utf-8")
        temporary.chmod(0o644)
        temporary.replace(path)
    except OSError as error:
        hint = "" if user_unit else " (a system unit needs root; or use --user, or --print)"
        raise GridshiftError(f"cannot write {path}: {error.strerror or error}{hint}") from None
    return Installed(path, next_steps(user_unit))


def reference_unit() -> str:
    """``config/gridshift.service``: a system-wide install in /opt with its config in /etc."""
    config = Path("/etc/gridshift/config.toml")
    return render_unit(UnitPaths(
        exec_start=["/opt/gridshift/.venv/bin/gridshift", "--config", str(config), "daemon"],
        config_path=config,
        working_directory=Path("/var/lib/gridshift"),
        user=DEFAULT_SERVICE_USER,
    ))
