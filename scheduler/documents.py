"""Job documents (``render.JOB_DOCUMENT``) as compact JSON and as CSV rows, a page of jobs
at a time, for outputs of many jobs (`list --json`, `report --json` and `--csv`): one
orjson call per few thousand jobs, where json.dumps over 100,000 job dicts costs seconds.
The text is what ``render.print_json`` writes for the same documents: ASCII, ``,`` and
``:`` separators (floats may be written without an exponent, as orjson writes them).

A finished job's texts are also stored (``models.JobDocument``, ``stored_texts``), split
where the keys derived from the config go (``render.CONFIG_KEYS``); ``joined_json`` and
``joined_csv`` put them back together with those keys' values."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson

from scheduler.render import CONFIG_KEYS, HEAD_KEYS, JOB_DOCUMENT, JOB_PARTS, TAIL_KEYS, Form

# Jobs per orjson call: big enough to amortise the call, small enough to stream.
JOBS_PER_CHUNK = 2000
# Keys whose values come as JSON text: the document's lists, and the parts a report adds.
LIST_KEYS = frozenset((*(key.name for key in JOB_DOCUMENT if key.form is Form.LIST),
                       *JOB_PARTS))
# Text keys that are ASCII by construction: times (ISO-8601, written by the database) and
# gridshift's own words (states, signals, energy methods, review states).
ASCII_KEYS = frozenset((*(key.name for key in JOB_DOCUMENT if key.form is Form.TIME),
                        "planned_end", "state", "signal", "energy_method", "actuals_state"))


def encoded_jobs(page: Mapping[str, Sequence[Any]]) -> Iterator[bytes]:
    """The job objects of one page of documents (``render.document_columns``: lists as
    JSON text), comma-separated, in pieces of at most ``JOBS_PER_CHUNK`` jobs, without
    the enclosing brackets."""
    columns = {key: _json_values(key, values) for key, values in page.items()}
    keys = list(columns)
    rows = zip(*columns.values(), strict=True)
    while batch := list(itertools.islice(rows, JOBS_PER_CHUNK)):
        yield orjson.dumps(list(map(dict, map(zip, itertools.repeat(keys), batch))))[1:-1]


def json_array(pages: Iterable[Mapping[str, Sequence[Any]]]) -> Iterator[bytes]:
    """A JSON array of every job of ``pages``, then a newline, in pieces."""
    yield b"["
    lead = b""
    for page in pages:
        for piece in encoded_jobs(page):
            yield lead + piece
            lead = b","
    yield b"]\n"


def _json_values(key: str, values: Sequence[Any]) -> Sequence[Any]:
    """One column's values as orjson should encode them: lists (stored as JSON text) and
    text that is not ASCII as ready JSON (json.dumps' ASCII escapes, which also carry the
    surrogates a non-UTF-8 command line leaves and orjson refuses), the rest as they are."""
    if key in LIST_KEYS:
        return [None if text is None else orjson.Fragment(_compact(text)) for text in values]
    if key not in ASCII_KEYS and isinstance(first_known(values), str) and not all(
            map(str.isascii, filter(None, values))):
        return [value if value is None or value.isascii() else
                orjson.Fragment(encode_basestring_ascii(value)) for value in values]
    return values


def first_known(values: Sequence[Any]) -> Any:
    return next((value for value in values if value is not None), None)


@functools.lru_cache(maxsize=65536)  # few distinct region lists in a large queue
def _compact(list_text: str) -> str:
    """A stored list (json.dumps' text, ASCII, ", " between items) without the spaces, as
    ``render.print_json`` writes it; a list of one item is already so."""
    if ", " not in list_text:
        return list_text
    return json.dumps(json.loads(list_text), separators=(",", ":"))


def stored_texts(page: Mapping[str, Sequence[Any]]) -> list[tuple[str, str, str, str]]:
    """Per job of a page of documents (``render.document_columns`` and ``JOB_PARTS``), what
    ``models.JobDocument`` stores: the JSON object's text before the config's keys (from
    its ``{``) and after them (to its ``}``), and the CSV row's cells before and after."""
    if not page["id"]:
        return []
    json_heads = _objects(page, HEAD_KEYS)
    json_tails = _objects(page, TAIL_KEYS)
    csv_heads = list(map(",".join, zip(*(csv_cells(page[key]) for key in HEAD_KEYS),
                                       strict=True)))
    csv_tails = list(map(",".join, zip(*(csv_cells(page[key]) for key in TAIL_KEYS),
                                       strict=True)))
    return [(head[:-1], "," + tail[1:], csv_head, csv_tail) for head, tail, csv_head, csv_tail
            in zip(json_heads, json_tails, csv_heads, csv_tails, strict=True)]


def _objects(page: Mapping[str, Sequence[Any]], keys: Sequence[str]) -> list[str]:
    """One JSON object per job of ``page`` with ``keys``, each its own text."""
    columns = [_json_values(key, page[key]) for key in keys]
    dumps = orjson.dumps
    return [dumps(dict(zip(keys, row, strict=True))).decode("ascii")
            for row in zip(*columns, strict=True)]


def joined_json(heads: Sequence[str], tails: Sequence[str],
                config_values: Mapping[str, Sequence[Any]]) -> str:
    """Stored JSON texts of many jobs (``stored_texts``) with the values of the config's
    keys (key -> one value per job), as comma-separated job objects."""
    columns = [number_texts(config_values[key]) for key in CONFIG_KEYS]
    names = [f',"{key}":' for key in CONFIG_KEYS]
    pieces: list[str] = []
    for head, tail, *values in zip(heads, tails, *columns, strict=True):
        pieces.append(head)
        for name, value in zip(names, values, strict=True):
            pieces += (name, value)
        pieces.append(tail)
        pieces.append(",")
    return "".join(pieces[:-1])


def joined_csv(heads: Sequence[str], tails: Sequence[str],
               config_values: Mapping[str, Sequence[Any]]) -> str:
    """Stored CSV cells of many jobs with the cells of the config's keys, as rows (each
    ending with a newline)."""
    columns = [csv_cells(config_values[key]) for key in CONFIG_KEYS]
    return "".join([",".join((head, *values, tail)) + "\n" for head, tail, *values
                    in zip(heads, tails, *columns, strict=True)])


def number_texts(values: Sequence[float | int | bool | None]) -> list[str]:
    """Numbers, booleans and nulls as JSON text: one orjson array split at its commas
    (json.dumps spends most of a report's encoding time on float repr). Floats come out
    as the shortest text that reads back to the same number, as repr's do."""
    if not values:
        return []
    return orjson.dumps(values).decode("ascii")[1:-1].split(",")


def csv_cells(values: Sequence[Any]) -> Sequence[str]:
    """One column's values as CSV cells, as the csv module writes them (minimal quoting;
    None as an empty cell); lists (JSON text) and numbers as their JSON text."""
    first = first_known(values)
    if isinstance(first, str):
        known = values if None not in values else ["" if v is None else v for v in values]
        if needs_quotes("".join(known)):  # then look at each, without a call per cell
            return ['"' + text.replace('"', '""') + '"'
                    if '"' in text or "," in text or "\n" in text or "\r" in text else text
                    for text in known]
        return known
    if isinstance(first, bool):  # as the csv module writes them
        return ["" if value is None else str(value) for value in values]
    # Numbers: JSON's text is a CSV cell too (floats as the shortest exact text).
    texts = number_texts(values)
    return texts if None not in values else ["" if text == "null" else text for text in texts]


def needs_quotes(text: str) -> bool:
    return '"' in text or "," in text or "\n" in text or "\r" in text


def csv_text(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if needs_quotes(text) else text
