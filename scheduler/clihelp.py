"""How ``--help`` pages read: in the words the docs use, with no Python type names.

Typer shows each parameter's annotation (``<bool>`` beside a flag, ``<str>`` beside an
argument) where no metavar is given, and beside an argument even when one is. The command
classes here give every flag, ``--help`` included, an empty metavar, and show an argument by
its name alone (``JOB_ID``).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup


class _NamedArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # its metavar, shown as its name, says what it is


def _without_type_names(params: list[Any]) -> None:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif type(param) is TyperArgument and param.metavar is not None:
            # The parameter typer built, given the one method that differs.
            param.__class__ = _NamedArgument


class Command(TyperCommand):
    """A command whose help shows no type name beside its flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _without_type_names(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _without_type_names([option])
        return option


class Group(TyperGroup):
    """A command group (one with options of its own, like ``simulate``) whose help shows
    no type name beside its flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _without_type_names(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _without_type_names([option])
        return option


class ParsesOwnArguments(TyperCommand):
    """A command that parses its arguments itself (``submit``, in submitcli.py): they
    reach its callback as ``context.args`` untouched, ``--`` and ``--help`` included."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return list(args)
