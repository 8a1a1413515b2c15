"""``gridshift report`` (table, ``--json``, ``--csv``) over many jobs, built by two processes.

Past ``PARALLEL_MIN_JOBS`` jobs nearly all of a report's time is Python work per value:
reading rows from SQLite, deriving the emissions, encoding text. That work splits cleanly
by job. A forked child builds and encodes the later half of the jobs into a temporary
file while this process does the earlier half; this process then copies the child's text
after its own and writes the totals of both (``report.merged_totals``: the same numbers
as over the whole, bit for bit). For the table, whose column widths need every row, the
child sends its cells instead and this process lays out both halves. The output equals
one process's byte for byte (tests/test_report_bulk.py). If the child fails, this
process builds that half itself.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Literal, NoReturn

from scheduler import report
from scheduler.config import Config
from scheduler.store import ReportKey, Store

Form = Literal["json", "csv", "text"]
# Below this many jobs a fork (about 10 ms) buys little.
PARALLEL_MIN_JOBS = 20_000
COPY_CHUNK_BYTES = 1 << 20


def write(store: Store, config: Config, since: datetime | None, until: datetime | None,
          regions: Sequence[str], form: Form, out: IO[str],
          min_jobs: int = PARALLEL_MIN_JOBS) -> None:
    """Write the report of every finished job that started in [since, until) in
    ``regions`` (default all) as JSON or CSV, with two processes from ``min_jobs`` jobs
    on where this machine has two CPUs to run them."""
    middle = store.report_middle(since, until, regions, min_jobs) if _can_fork() else None
    if middle is None:
        whole = report.build(store, config, since, until, regions, table_only=form == "text")
        WRITERS[form](whole, out)
        return
    if form == "text":
        _write_table(store, config, since, until, regions, middle, out)
        return
    with tempfile.TemporaryFile() as later_body, tempfile.TemporaryFile() as later_totals:
        store.engine.dispose()  # no open SQLite connection may cross the fork
        out.flush()
        child = os.fork()
        if child == 0:
            _build_later_half(store, config, since, until, regions, middle, form,
                              later_body, later_totals)
        try:
            earlier = report.build(store, config, since, until, regions,
                                   part=("before", middle))
            out.write(report.json_head() if form == "json" else report.csv_head(earlier))
            report.write_body(earlier, form, out)
        except BaseException:
            os.kill(child, signal.SIGKILL)  # its half is of no use now
            os.waitpid(child, 0)
            raise
        if _succeeded(child):
            later_jobs, totals = pickle.loads(_read_all(later_totals))
            if earlier.job_count and later_jobs:
                out.write(report.BODY_SEPARATOR[form])
            _copy_text(later_body, out)
        else:
            later = report.build(store, config, since, until, regions, part=("from", middle))
            if earlier.job_count and later.job_count:
                out.write(report.BODY_SEPARATOR[form])
            report.write_body(later, form, out)
            totals = later.totals
        if form == "json":
            out.write(report.json_tail(report.merged_totals(earlier.totals, totals)))


WRITERS = {"json": report.write_json, "csv": report.write_csv, "text": report.write_text}


def _write_table(store: Store, config: Config, since: datetime | None,
                 until: datetime | None, regions: Sequence[str], middle: ReportKey,
                 out: IO[str]) -> None:
    """The human table: the child pickles the later half's cells and totals
    (``report.TablePart``), and this process lays out both halves together."""
    with tempfile.TemporaryFile() as later_part:
        store.engine.dispose()  # no open SQLite connection may cross the fork
        out.flush()
        child = os.fork()
        if child == 0:
            _build_later_table_part(store, config, since, until, regions, middle, later_part)
        try:
            earlier = report.TablePart.of(report.build(
                store, config, since, until, regions, table_only=True, part=("before", middle)))
        except BaseException:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise
        if _succeeded(child):
            later = pickle.loads(_read_all(later_part))
        else:
            later = report.TablePart.of(report.build(
                store, config, since, until, regions, table_only=True, part=("from", middle)))
        report.write_table_parts(since, until, [earlier, later], out)


def _build_later_table_part(store: Store, config: Config, since: datetime | None,
                            until: datetime | None, regions: Sequence[str],
                            middle: ReportKey, part: IO[bytes]) -> NoReturn:
    """The child for the table: the later half's ``report.TablePart``, pickled, into
    ``part``; exit status 0 means it is whole (see ``_build_later_half``)."""
    status = 1
    try:
        later = report.build(store, config, since, until, regions, table_only=True,
                             part=("from", middle))
        pickle.dump(report.TablePart.of(later), part, protocol=pickle.HIGHEST_PROTOCOL)
        part.flush()
        status = 0
    except BaseException:  # the parent redoes the half and meets any error itself
        pass
    finally:
        os._exit(status)


def _build_later_half(store: Store, config: Config, since: datetime | None,
                      until: datetime | None, regions: Sequence[str], middle: ReportKey,
                      form: Form, body: IO[bytes], totals: IO[bytes]) -> NoReturn:
    """The child: the later half's body into ``body`` and its job count and totals,
    pickled, into ``totals``. It ends with os._exit, so nothing of the parent's (buffers, atexit
    handlers, the connection pool) runs twice; exit status 0 means both files are whole."""
    status = 1
    try:
        later = report.build(store, config, since, until, regions, part=("from", middle))
        text = io.TextIOWrapper(body, encoding="utf-8", newline="")
        report.write_body(later, form, text)
        text.flush()
        text.detach()
        pickle.dump((later.job_count, later.totals), totals)
        totals.flush()
        status = 0
    except BaseException:  # the parent redoes the half and meets any error itself
        pass
    finally:
        os._exit(status)


def _succeeded(child: int) -> bool:
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _copy_text(source: IO[bytes], out: IO[str]) -> None:
    """Append ``source`` (UTF-8 text) to ``out``: as bytes where ``out`` writes UTF-8 to a
    byte stream, else decoded."""
    source.seek(0)
    buffer = getattr(out, "buffer", None)
    encoding = getattr(out, "encoding", None)
    if buffer is not None and encoding and codecs.lookup(encoding).name == "utf-8":
        out.flush()
        shutil.copyfileobj(source, buffer, COPY_CHUNK_BYTES)
        return
    text = io.TextIOWrapper(source, encoding="utf-8", newline="")
    shutil.copyfileobj(text, out, COPY_CHUNK_BYTES)
    text.detach()


def _read_all(source: IO[bytes]) -> bytes:
    source.seek(0)
    return source.read()


def _can_fork() -> bool:
    if not hasattr(os, "fork"):
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cpus or 1) >= 2
