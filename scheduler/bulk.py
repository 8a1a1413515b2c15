"""``gridshift report`` (table, ``--json``, ``--csv``) over many jobs, built by two processes.

Past ``PARALLEL_MIN_JOBS`` jobs nearly all of a report's time is Python work per value:
reading rows from SQLite, deriving the emissions, encoding text. That work splits cleanly
by job. A forked child builds the later half of the jobs (encoded as JSON or CSV text, or
as the table's cells) while this process does the earlier half; this process then writes
the child's part after its own, and the totals of both (``report.merged_totals``: the
same numbers as over the whole, bit for bit). The table is laid out by this process from
both halves' cells, since its column widths need every row. The output equals one
process's byte for byte (tests/test_report_bulk.py). If the child fails, this process
builds that half itself.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Literal

from scheduler import report
from scheduler.config import Config
from scheduler.report import encoding
from scheduler.report import table as text_table
from scheduler.store import Store

Form = Literal["json", "csv", "text"]
# Below this many jobs a fork (about 10 ms) buys little.
PARALLEL_MIN_JOBS = 20_000
COPY_CHUNK_BYTES = 1 << 20
WRITERS = {"json": report.write_json, "csv": report.write_csv, "text": report.write_text}


def write(store: Store, config: Config, since: datetime | None, until: datetime | None,
          regions: Sequence[str], form: Form, out: IO[str],
          min_jobs: int = PARALLEL_MIN_JOBS) -> None:
    """Write the report of every finished job that started in [since, until) in
    ``regions`` (default all) as the table, JSON or CSV, with two processes from
    ``min_jobs`` jobs on where this machine has two CPUs to run them."""
    table = form == "text"
    middle = store.report_middle(since, until, regions, min_jobs) if _can_fork() else None
    if middle is None:
        WRITERS[form](report.build(store, config, since, until, regions, table_only=table),
                      out)
        return

    def half(side: Literal["before", "from"]) -> report.Report:
        return report.build(store, config, since, until, regions, table_only=table,
                            part=(side, middle))

    def later_part(body: IO[bytes]) -> Any:
        """The table's cells and totals; or the JSON or CSV text, written to ``body``,
        and the job count and totals."""
        later = half("from")
        if table:
            return text_table.TablePart.of(later)
        text = io.TextIOWrapper(body, encoding="utf-8", newline="")
        encoding.write_body(later, form, text)
        text.flush()
        text.detach()
        return later.job_count, later.totals

    with _Child.fork(store, out, later_part) as child:
        try:
            earlier = half("before")
            if table:
                earlier_part = text_table.TablePart.of(earlier)
            else:  # written while the child works
                out.write(encoding.json_head() if form == "json" else encoding.csv_head(earlier))
                encoding.write_body(earlier, form, out)
        except BaseException:
            child.kill()  # its half is of no use now
            raise
        later = child.result()
        if later is None:  # it failed: do its part here
            child.body.seek(0)
            child.body.truncate()
            later = later_part(child.body)
            child.body.seek(0)
        if table:
            text_table.write_table_parts(since, until, [earlier_part, later], out)
            return
        later_jobs, later_totals = later
        if earlier.job_count and later_jobs:
            out.write(encoding.BODY_SEPARATOR[form])
        _copy_utf8(child.body, out)
        if form == "json":
            out.write(encoding.json_tail(report.merged_totals(earlier.totals, later_totals)))


@dataclass(frozen=True)
class _Child:
    """A forked process doing part of this one's work: ``compute(body)`` may write text
    to ``body`` and returns a value, handed over pickled. Both travel in temporary files,
    closed on leaving the ``with`` block."""

    pid: int
    body: IO[bytes]
    handover: IO[bytes]

    @classmethod
    def fork(cls, store: Store, out: IO[str], compute: Callable[[IO[bytes]], Any]) -> _Child:
        body, handover = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        store.engine.dispose()  # no open SQLite connection may cross the fork
        out.flush()
        pid = os.fork()
        if pid == 0:
            # It ends with os._exit, so nothing of this process's (buffers, atexit
            # handlers, the connection pool) runs twice; status 0: the files are whole.
            status = 1
            try:
                value = compute(body)
                body.flush()
                pickle.dump(value, handover, protocol=pickle.HIGHEST_PROTOCOL)
                handover.flush()
                status = 0
            except BaseException:  # the parent does the work and meets any error itself
                pass
            finally:
                os._exit(status)
        return cls(pid, body, handover)

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *_: object) -> None:
        self.body.close()
        self.handover.close()

    def result(self) -> Any | None:
        """The child's value once it has ended, ``body`` rewound; None where it failed."""
        _, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return None
        self.body.seek(0)
        self.handover.seek(0)
        return pickle.loads(self.handover.read())

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def _copy_utf8(source: IO[bytes], out: IO[str]) -> None:
    """Append ``source`` (UTF-8 text, from where it stands) to ``out``: as bytes where
    ``out`` writes UTF-8 to a byte stream, else decoded."""
    buffer = getattr(out, "buffer", None)
    encoding = getattr(out, "encoding", None)
    if buffer is not None and encoding and codecs.lookup(encoding).name == "utf-8":
        out.flush()
        shutil.copyfileobj(source, buffer, COPY_CHUNK_BYTES)
        return
    text = io.TextIOWrapper(source, encoding="utf-8", newline="")
    shutil.copyfileobj(text, out, COPY_CHUNK_BYTES)
    text.detach()


def _can_fork() -> bool:
    if not hasattr(os, "fork"):
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cpus or 1) >= 2
