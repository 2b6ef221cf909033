"""The cores' histogram (_common/histogram.py): buckets, sum, count, bad values."""

from __future__ import annotations

import math

import pytest

from sipedge._common.histogram import SETUP_BUCKETS, SIP_RESPONSE_BUCKETS, Histogram


def test_values_fall_in_the_first_bucket_whose_bound_is_not_below_them() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.counts == [2, 2, 1]  # <= 0.1 (a bound is inclusive), <= 1, above
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert h.count == 5 and h.sum == pytest.approx(8.65)


def test_a_negative_or_nan_duration_counts_as_zero_and_never_raises() -> None:
    h = Histogram((0.1,))
    h.observe(-3.0)
    h.observe(float("nan"))
    assert h.counts == [2, 0] and h.sum == 0.0 and h.count == 2


def test_an_infinite_duration_lands_above_every_bound() -> None:
    h = Histogram((0.1,))
    h.observe(math.inf)
    assert h.cumulative()[-1] == (math.inf, 1) and h.counts[0] == 0


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf), (float("nan"),)])
def test_bounds_must_be_finite_and_strictly_ascending(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="histogram bounds"):
        Histogram(bounds)


def test_the_shipped_bucket_sets_are_valid() -> None:
    for bounds in (SIP_RESPONSE_BUCKETS, SETUP_BUCKETS):
        assert Histogram(bounds).cumulative()[-1] == (math.inf, 0)
