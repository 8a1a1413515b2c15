"""Start the real job wrapper the way the daemon does: an isolated interpreter, the spec on
its stdin, its output on the job's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any


def start_wrapper(records: Path, argv: list[str], cwd: Path, log: IO[bytes] | int,
                  env: dict[str, str] | None = None, **spec: Any) -> subprocess.Popen[bytes]:
    """The wrapper for one job whose records go to ``records``.* (a path prefix)."""
    process = subprocess.Popen(
        [sys.executable, "-I", "-m", "scheduler.executors.jobwrapper"], cwd="/",
        env={"PATH": os.defpath}, stdin=subprocess.PIPE, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(json.dumps({
        "records": str(records), "argv": argv, "cwd": str(cwd),
        "env": dict(os.environ if env is None else env), **spec}).encode())
    process.stdin.close()
    return process
