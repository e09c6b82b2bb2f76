"""Set operations that let other threads run: the same results as numpy's own."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.arrays import sorted_unique, unique_rows


@pytest.mark.parametrize("size", [0, 1, 2, 1000, 200_000])
def test_sorted_unique_is_numpy_unique(size: int) -> None:
    rng = np.random.default_rng(size)
    for values in (
        rng.integers(0, max(1, size // 3), size),
        rng.integers(-5, 5, (size, 3)),
        rng.integers(0, 2**40, size),
    ):
        got, want = sorted_unique(values), np.unique(values)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rows", [0, 1, 7, 5000])
def test_unique_rows_is_numpy_unique_on_axis_0(rows: int) -> None:
    rng = np.random.default_rng(rows)
    v = (rng.random((rows, 3)) - 0.5).round(2)  # coarse values: many equal rows and columns
    v = np.concatenate([v, v[: rows // 2]])[rng.permutation(rows + rows // 2)]
    if rows:
        v[0] = (0.0, -0.0, 1.0)
        v = np.concatenate([v, [(-0.0, 0.0, 1.0)]])
    want_rows, want_inverse = np.unique(v, axis=0, return_inverse=True)
    got_rows, got_inverse = unique_rows(v)
    np.testing.assert_array_equal(got_rows, want_rows)
    np.testing.assert_array_equal(got_inverse, want_inverse.reshape(-1))
    assert got_inverse.dtype == np.int64
