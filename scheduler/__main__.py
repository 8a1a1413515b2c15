"""``gridshift`` (the console script) and ``python -m scheduler``.

``submit`` goes to its own parser (submitcli.py) before typer loads; every other command to
the typer app in cli.py.
"""

import sys

from scheduler import stopflag


def main() -> None:
    arguments = sys.argv[1:]
    if stopflag.is_daemon_command(arguments):
        stopflag.install()  # before the slow imports: an early SIGTERM stops it cleanly
    submit = _submit_arguments(arguments)
    if submit is not None:
        from scheduler import submitcli

        config_path, rest = submit
        sys.exit(submitcli.main(rest, config_path))
    from scheduler.cli import main as run_typer_app

    run_typer_app()


def _submit_arguments(arguments: list[str]) -> tuple[str | None, list[str]] | None:
    """(the config path, submit's own arguments) where ``arguments`` are
    ``[--config FILE] submit ...``; None for anything else (another command, --help,
    --version), which the typer app handles."""
    config_path = None
    position = 0
    if arguments[:1] == ["--config"] and len(arguments) > 1:
        config_path, position = arguments[1], 2
    elif arguments[:1] and arguments[0].startswith("--config="):
        config_path, position = arguments[0].removeprefix("--config="), 1
    if arguments[position:position + 1] != ["submit"]:
        return None
    return config_path, arguments[position + 1:]


if __name__ == "__main__":
    main()
