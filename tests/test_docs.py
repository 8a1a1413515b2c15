"""The README and docs/ against the program: every link resolves, the README's command
table names every command, each command's page mentions every option it takes, and every
TOML block is a config the loader accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer

from scheduler import submitcli
from scheduler.cli import app
from scheduler.config import parse_config

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Where each command's options are documented (a command not listed: docs/commands.md).
OPTION_PAGES = {"report": "accounting.md", "status": "service.md",
                "service install": "service.md", "simulate": "simulate.md"}
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _commands() -> dict[str, list[str]]:
    """Every command by its full name ('submit', 'db upgrade', 'simulate convert uk-fw48h'),
    with its long options."""
    found: dict[str, list[str]] = {}

    def walk(command: Any, name: str) -> None:
        options = [opt for param in command.params if param.param_type_name == "option"
                   for opt in param.opts if opt.startswith("--") and opt != "--help"]
        subcommands = getattr(command, "commands", None)
        if subcommands is None or (name and options):
            found[name] = options
        for sub_name, sub in (subcommands or {}).items():
            walk(sub, f"{name} {sub_name}".strip())

    walk(typer.main.get_command(app), "")
    # submit parses its own options (submitcli.py); typer only passes them on.
    found["submit"] = [opt for action in submitcli.parser()._actions
                       for opt in action.option_strings if opt != "--help"]
    return found


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub renders it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and anchor not in _anchors(linked):
            broken.append(target)
    assert broken == []


def test_the_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = set(LINK.findall(readme))
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set()


def test_the_readme_command_table_names_every_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("| `")]
    top_level = {name.split(" convert")[0] for name in _commands()}
    missing = [name for name in sorted(top_level)
               if not any(row.strip("`").startswith(name) for row in rows)]
    assert missing == []


@pytest.mark.parametrize("name", sorted(_commands()))
def test_each_commands_page_mentions_every_option(name: str) -> None:
    top = name.split(" convert")[0]
    page = REPO / "docs" / OPTION_PAGES.get(top, "commands.md")
    text = page.read_text(encoding="utf-8")
    assert [opt for opt in _commands()[name]
            if not re.search(rf"(?<![\w-]){opt}(?![\w-])", text)] == []


def _toml_blocks() -> list[tuple[str, str]]:
    return [(page.name, block) for page in PAGES
            for block in re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"),
                                    flags=re.DOTALL)]


@pytest.mark.parametrize(("page", "block"), _toml_blocks(),
                         ids=[f"{page}-{i}" for i, (page, _) in enumerate(_toml_blocks())])
def test_each_toml_block_is_a_valid_config(page: str, block: str, tmp_path: Path) -> None:
    raw = tomllib.loads(block)
    for table in raw.get("providers", {}).values():
        if "path" in table:  # a csv provider: its file must exist, so make one
            csv_file = tmp_path / Path(table["path"]).name
            csv_file.write_text("start,end,gco2_per_kwh\n", encoding="utf-8")
            table["path"] = str(csv_file)
    parse_config(raw, str(tmp_path / "gridshift.toml"), {})
