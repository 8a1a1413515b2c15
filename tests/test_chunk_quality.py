"""The exact reference of benchmarks/chunk_quality.py against a brute-force enumeration:
the figures it prints for the chunk planner are only as good as this reference."""

from __future__ import annotations

import importlib.util
import math
from itertools import combinations
from pathlib import Path
from types import ModuleType

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st


def _load_script() -> ModuleType:
    path = Path(__file__).parent.parent / "benchmarks" / "chunk_quality.py"
    spec = importlib.util.spec_from_file_location("chunk_quality", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chunk_quality = _load_script()


def _brute_force(values: list[float], work: int, min_run: int) -> float:
    best = math.inf
    for chosen in combinations(range(len(values)), work):
        runs, length = [], 0
        for index in range(len(values)):
            if index in chosen:
                length += 1
            elif length:
                runs.append(length)
                length = 0
        if length:
            runs.append(length)
        if all(run >= min_run for run in runs):
            best = min(best, sum(values[i] for i in chosen))
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-50, 400), min_size=1, max_size=11), st.data())
def test_cheapest_whole_steps_is_the_brute_force_optimum(values: list[int],
                                                        data: st.DataObject) -> None:
    work = data.draw(st.integers(1, len(values)))
    min_run = data.draw(st.integers(1, len(values) + 1))
    expected = _brute_force([float(v) for v in values], work, min_run)
    found = chunk_quality.cheapest_whole_steps(np.array(values, dtype=np.float64), work,
                                               min_run)
    assert found == expected


def test_a_dirty_step_between_two_clean_ones_is_taken_when_runs_must_be_long() -> None:
    values = np.array([1.0, 1.0, 100.0, 1.0, 1.0, 50.0, 50.0])
    # Runs of 2: the two clean pairs. Runs of 3: one clean pair and its dirtier neighbour,
    # not the three cleanest steps.
    assert chunk_quality.cheapest_whole_steps(values, 4, 2) == 4.0
    assert chunk_quality.cheapest_whole_steps(values, 3, 3) == 52.0
    assert chunk_quality.cheapest_whole_steps(values, 8, 1) == math.inf
