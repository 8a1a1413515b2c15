"""gridshift as a real package: a wheel that carries its migrations and works on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 600


def test_version_option_prints_the_installed_version() -> None:
    result = subprocess.run([sys.executable, "-m", "scheduler", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"gridshift {version('gridshift')}\n", "")


def test_every_package_in_the_source_tree_is_listed_for_the_wheel() -> None:
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    in_tree = {".".join(path.parent.relative_to(REPOSITORY).parts)
               for path in (REPOSITORY / "scheduler").rglob("__init__.py")}
    assert in_tree - listed == set()
    assert {"scheduler.migrations", "scheduler.migrations.versions"} <= listed


@pytest.mark.slow
@pytest.mark.timeout(2 * INSTALL_TIMEOUT_S)  # installing pandas and numpy in a fresh venv
def test_the_built_wheel_works_from_a_fresh_venv_outside_the_checkout(tmp_path: Path) -> None:
    """Build the wheel, install it (dependencies from the pip cache or PyPI) into a new venv
    in a directory outside the checkout, and run db upgrade, submit and list there."""
    wheels, venv, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert REPOSITORY not in tmp_path.parents
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRIDSHIFT_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"XDG_CONFIG_HOME": str(elsewhere / "config"),
                "XDG_DATA_HOME": str(elsewhere / "data"),
                "XDG_STATE_HOME": str(elsewhere / "state"),
                "XDG_RUNTIME_DIR": str(elsewhere / "run")})

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                                cwd=elsewhere, env=env, timeout=INSTALL_TIMEOUT_S)
        assert result.returncode == 0, f"{argv}: {result.stderr[-2000:]}"
        return result

    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, REPOSITORY)
    [wheel] = wheels.glob("gridshift-*.whl")
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    installed = run(venv / "bin" / "python", "-c", "import scheduler; print(scheduler.__file__)")
    assert Path(installed.stdout.strip()).is_relative_to(venv)

    config = elsewhere / "gridshift.toml"
    config.write_text('[database]\nurl = "sqlite:///state/gridshift.db"\n'
                      '[providers.demo]\nkind = "replay"\n'
                      '[regions.gb]\nprovider = "demo"\nzone = "GB"\n', encoding="utf-8")
    gridshift = [venv / "bin" / "gridshift", "--config", config]
    assert "revision" in run(*gridshift, "db", "upgrade").stdout
    assert (elsewhere / "state" / "gridshift.db").is_file()
    run(*gridshift, "submit", "--name", "from-the-wheel", "--duration", "1h", "--", "true")
    listed = run(*gridshift, "list")
    assert "from-the-wheel" in listed.stdout
