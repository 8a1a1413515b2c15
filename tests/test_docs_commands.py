"""Every command block in README.md and docs/*.md, run: the docs cannot drift from the program.

Each page's fenced ``sh`` and ``console`` blocks run in order, in a temporary directory laid
out like a clone (``config/demo.toml`` a throw-away copy of the demo config, ``scheduler/``
and ``tests/`` the repository's own, ``.venv/bin/gridshift`` and ``gridshift`` this
checkout's CLI). Before a page runs, its database is created and the replayed forecasts
stored, as the demo daemon does at start; no daemon runs, so no job launches.

A ``sh`` block must exit 0. In a ``console`` block each ``$ `` line is a command and the
lines after it its output (stdout and stderr together), compared after masking what
changes from run to run: times, numbers (ids, intensities, percentages), the demo's region
names, the user and the temporary directory; runs of spaces or rule characters count as
one, blank lines are left out, and a ``...`` line stands for any number of lines.

A block that cannot run offline or in a test (``make run``, systemd, the whole suite) is
marked on the line before its fence with ``<!-- docs-test: skip: REASON -->``.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!-- docs-test: skip: (?P<reason>[^>]*\S) -->")
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", flags=re.DOTALL | re.MULTILINE)
DEMO_REGIONS = list(tomllib.loads((REPO / "config" / "demo.toml").read_text())["regions"])
MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d| UTC)?"), "TIME"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "N"),
    (re.compile(rf"\b({'|'.join(map(re.escape, DEMO_REGIONS))})\b"), "REGION"),
    (re.compile(r"-{2,}|─{2,}|#{2,}"), "--"),
    (re.compile(r"[ \t]+"), " "),
]


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence
    lang: str
    body: str
    skip_reason: str | None


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match["lang"] not in ("sh", "console"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.fullmatch(before.strip())
        found.append(Block(page.name, line, match["lang"], match["body"],
                           marker["reason"] if marker else None))
    return found


def commands_and_outputs(body: str) -> list[tuple[str, list[str]]]:
    """A console block's ``$ `` commands, each with the output lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def mask(line: str, directory: Path) -> str:
    line = line.replace(str(directory), ".")
    for user in {getpass.getuser(), "root"}:  # the docs' examples ran as root
        line = re.sub(rf"(?<![\w/-]){re.escape(user)}(?![\w/-])", "USER", line)
    for pattern, replacement in MASKS:
        line = pattern.sub(replacement, line)
    return line.strip()


def matches(shown: list[str], printed: list[str]) -> bool:
    """Whether the printed lines are the shown ones, a ``...`` line standing for any run."""
    if not shown:
        return not printed
    if shown[0] == "...":
        return any(matches(shown[1:], printed[skip:]) for skip in range(len(printed) + 1))
    return bool(printed) and shown[0] == printed[0] and matches(shown[1:], printed[1:])


@dataclass
class Clone:
    """The temporary directory a page's blocks run in, and how to run a command there."""

    root: Path
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path) -> Clone:
        (root / "config").mkdir()
        # A short socket path of its own (Unix sockets allow about 100 bytes), so no
        # daemon elsewhere on this machine answers for the demo.
        socket_dir = Path(tempfile.mkdtemp(prefix="gs-docs-"))
        demo = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
        (root / "config" / "demo.toml").write_text(
            demo.replace("[daemon]\n", f'[daemon]\nsocket = "{socket_dir / "gs.sock"}"\n', 1),
            encoding="utf-8")
        for shared in ("scheduler", "tests"):
            (root / shared).symlink_to(REPO / shared)
        launcher = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m scheduler "$@"\n'
        for directory in (root / ".venv" / "bin", root / "bin"):
            directory.mkdir(parents=True)
            (directory / "gridshift").write_text(launcher, encoding="utf-8")
            (directory / "gridshift").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSHIFT_")}
        env.update({
            "PATH": f"{root / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",  # stdout and stderr in the order they were written
            "GRIDSHIFT_CONFIG": str(root / "config" / "demo.toml"),
            "XDG_CONFIG_HOME": str(root / "xdg-config"),
            "XDG_DATA_HOME": str(root / "xdg-data"),
            "XDG_STATE_HOME": str(root / "xdg-state"),
            "XDG_RUNTIME_DIR": str(socket_dir),
            "TZ": "UTC",
            "COLUMNS": "200",
        })
        return cls(root, env)

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=self.root,
                              env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=300)


def runnable_pages() -> list[Path]:
    return [page for page in PAGES if any(b.skip_reason is None for b in blocks(page))]


def test_every_skipped_block_says_why() -> None:
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    markers = re.findall(r"<!-- docs-test:.*?-->", text)
    assert markers, "no block is marked: the marker syntax may have changed"
    assert [m for m in markers if not SKIP.fullmatch(m)] == []


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.name)
def test_each_command_block_runs_and_prints_what_the_docs_show(page: Path,
                                                               tmp_path: Path) -> None:
    clone = Clone.create(tmp_path)
    setup = clone.run("gridshift --config config/demo.toml db upgrade >/dev/null && "
                      "gridshift --config config/demo.toml forecast --refresh >/dev/null")
    assert setup.returncode == 0, setup.stdout
    for block in blocks(page):
        if block.skip_reason is not None:
            continue
        where = f"{block.page} line {block.line}"
        if block.lang == "sh":
            result = clone.run(block.body)
            assert result.returncode == 0, f"{where}: exit {result.returncode}\n{result.stdout}"
            continue
        for command, shown in commands_and_outputs(block.body):
            result = clone.run(command)
            assert result.returncode == 0, f"{where}: {command}\n{result.stdout}"
            if not shown:
                continue
            expected = [mask(line, tmp_path) for line in shown if line.strip()]
            printed = [mask(line, tmp_path) for line in result.stdout.splitlines()
                       if line.strip()]
            assert matches(expected, printed), (
                f"{where}: {command}\n--- shown\n" + "\n".join(shown)
                + "\n--- printed\n" + result.stdout)
