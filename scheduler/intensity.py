"""Intensity as a step function over time, and its one prefix integral: no I/O, no clock.

A forecast (or a series of actuals) is a step function: each value is the average over
its own interval [start, end), times are float seconds since the epoch (UTC), intervals
are sorted and may leave gaps. The integral of the values (and of the coverage) from the
first start to any time t is continuous and linear between boundaries, so the mean over
any window is a difference of two interpolations: the planner's window search, the
accounting of actuals and the simulator all use ``PrefixIntegral``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from scheduler.timespec import to_epoch

if TYPE_CHECKING:
    from scheduler.records import Series

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ComplexArray = npt.NDArray[np.complex128]

# np.interp without its Python-level argument checks: most calls here are on a few points.
_interp: Callable[[FloatArray, FloatArray, FloatArray], FloatArray]
try:
    from numpy._core.multiarray import interp as _interp  # numpy 2
    from numpy._core.multiarray import interp_complex
except ImportError:  # pragma: no cover - numpy 1.26
    _interp = np.interp
    interp_complex = np.interp  # type: ignore[misc]
_interp_pair = cast(Callable[[FloatArray, FloatArray, ComplexArray], ComplexArray],
                    interp_complex)


# Means are compared after rounding, so float noise from prefix sums cannot break ties.
MEAN_DECIMALS = 6
COVERAGE_TOLERANCE_S = 1e-6
KEY_SCALE = 10.0**MEAN_DECIMALS  # window keys are means in whole micro-gCO2/kWh
_INF = math.inf


@dataclass(frozen=True)
class Forecast:
    """One region's intensity as a step function: values[i] over [starts[i], ends[i])."""

    starts: FloatArray
    ends: FloatArray
    values: FloatArray

    @classmethod
    def from_lists(
        cls, starts: Sequence[float], ends: Sequence[float], values: Sequence[float]
    ) -> Forecast:
        return cls(np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64),
                   np.asarray(values, dtype=np.float64))

    @classmethod
    def of_series(cls, series: Series) -> Forecast:
        """A stored series (aware datetimes) as a step function over epoch seconds."""
        return cls.from_lists([to_epoch(start) for start in series.starts],
                              [to_epoch(end) for end in series.ends], series.values)

    @classmethod
    def empty(cls) -> Forecast:
        return cls.from_lists([], [], [])

    def __post_init__(self) -> None:
        if not (len(self.starts) == len(self.ends) == len(self.values)):
            raise ValueError("starts, ends and values must have the same length")
        if len(self.starts) and (
            np.any(self.ends <= self.starts) or np.any(self.starts[1:] < self.ends[:-1])
        ):
            raise ValueError("forecast intervals must be sorted, non-empty and not overlap")
        if not (np.all(np.isfinite(self.values)) and np.all(np.isfinite(self.starts))
                and np.all(np.isfinite(self.ends))):
            raise ValueError("forecast times and values must be finite numbers")


class PrefixIntegral:
    """Integral of a step function (and of its coverage) from its first start to t.

    Both integrals are continuous and linear between interval boundaries, so they are
    stored at the boundaries and interpolated (``np.interp``, one C call per array).
    """

    def __init__(self, forecast: Forecast) -> None:
        lengths = forecast.ends - forecast.starts
        value_before = np.concatenate(([0.0], np.cumsum(forecast.values * lengths)))
        cover_before = np.concatenate(([0.0], np.cumsum(lengths)))
        # return_index only to skip np.unique's plain path, whose first call imports numpy.ma
        # (about 15 ms of `gridshift submit`'s start-up).
        self.boundaries: FloatArray = np.unique(
            np.concatenate((forecast.starts, forecast.ends)), return_index=True)[0]
        # Where a boundary falls: the interval it starts, else the gap or end it closes.
        index = np.maximum(np.searchsorted(forecast.starts, self.boundaries, side="right") - 1, 0)
        if len(forecast.starts):
            partial = np.minimum(self.boundaries - forecast.starts[index], lengths[index])
            self.value_at = value_before[index] + forecast.values[index] * partial
            self.cover_at = cover_before[index] + partial
            # Both integrals as one complex array: one interpolation (one search) for both.
            self.both_at = self.value_at + 1j * self.cover_at
        self.empty = len(forecast.starts) == 0
        self._lists: tuple[list[float], list[float], list[float]] | None = None

    def at(self, times: FloatArray) -> tuple[FloatArray, FloatArray]:
        if self.empty:
            zeros = np.zeros(len(times), dtype=np.float64)
            return zeros, zeros
        return (_interp(times, self.boundaries, self.value_at),
                _interp(times, self.boundaries, self.cover_at))

    def window_key(self, start: float, duration: float) -> float:
        """``window_keys`` for one window, in plain floats: the same arithmetic as the
        complex interpolation (slope as difference times 1 / width), so the same key."""
        if self.empty:
            return _INF
        value_end, cover_end = self._integrals_at(start + duration)
        value_start, cover_start = self._integrals_at(start)
        if cover_end - cover_start < duration - COVERAGE_TOLERANCE_S:
            return _INF
        return float(round((value_end - value_start) * (KEY_SCALE / duration)))

    def _integrals_at(self, time: float) -> tuple[float, float]:
        if self._lists is None:
            self._lists = (self.boundaries.tolist(), self.value_at.tolist(),
                           self.cover_at.tolist())
        times, values, covers = self._lists
        if time <= times[0]:
            return values[0], covers[0]
        if time >= times[-1]:
            return values[-1], covers[-1]
        at = bisect_right(times, time) - 1
        if times[at] == time:
            return values[at], covers[at]
        inverse_width = 1.0 / (times[at + 1] - times[at])
        offset = time - times[at]
        return ((values[at + 1] - values[at]) * inverse_width * offset + values[at],
                (covers[at + 1] - covers[at]) * inverse_width * offset + covers[at])

    def window_keys(self, starts: FloatArray, duration: float) -> FloatArray:
        """Mean over [s, s + duration) in whole micro-gCO2/kWh where data covers all of
        it, else +inf: rounded, so float noise cannot split a tie."""
        if self.empty:
            return np.full(len(starts), _INF)
        both = _interp_pair(starts + duration, self.boundaries, self.both_at)
        both -= _interp_pair(starts, self.boundaries, self.both_at)
        value, cover = both.real, both.imag
        value *= KEY_SCALE / duration
        keys: FloatArray = np.where(cover >= duration - COVERAGE_TOLERANCE_S,
                                    np.rint(value), _INF)
        return keys


def window_mean(forecast: Forecast, start: float, duration: float) -> tuple[float | None, bool]:
    """Mean forecast over [start, start + duration) and whether data covers all of it.

    The mean is over the covered part (None when nothing is covered); callers that need a
    mean over the whole window use it only when ``covered`` is true.
    """
    value, cover = PrefixIntegral(forecast).at(
        np.array([start, start + duration], dtype=np.float64))
    covered_s = float(cover[1] - cover[0])
    if covered_s <= 0:
        return None, False
    mean = round(float(value[1] - value[0]) / covered_s, MEAN_DECIMALS)
    return mean, covered_s >= duration - COVERAGE_TOLERANCE_S
