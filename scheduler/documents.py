"""Job documents (``render.JOB_DOCUMENT``) as compact JSON, a page of jobs at a time, for
outputs of many jobs (`list --json`, `report --json`): one orjson call per few thousand
jobs, where json.dumps over 100,000 job dicts costs seconds. The text is what
``render.print_json`` writes for the same documents: ASCII, ``,`` and ``:`` separators
(floats may be written without an exponent, as orjson writes them)."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson

from scheduler.render import JOB_DOCUMENT, JOB_PARTS, Form

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
