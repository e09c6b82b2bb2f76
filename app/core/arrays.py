"""Set operations on numpy arrays that let other threads run.

numpy 2.3+ finds the distinct values of a 1-D array with a hash table that holds the interpreter
for its whole run (seconds for millions of grid indices, the window frozen meanwhile), and its
``unique(axis=0)`` sorts rows as one structured array, also holding it. These give the same
results through ``sort`` and ``lexsort``, which let go of the interpreter while they work.
"""

from __future__ import annotations

import numpy as np


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``: the distinct values, flattened and sorted."""
    ranked = np.sort(np.asarray(values), axis=None)
    keep = np.empty(ranked.shape, dtype=bool)
    keep[:1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=keep[1:])
    return ranked[keep]


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True)``: the distinct rows in lexicographic
    order and, per row, the index of its distinct row."""
    v = np.asarray(rows)
    if len(v) == 0:
        return v.copy(), np.zeros(0, dtype=np.int64)
    order = np.lexsort(v.T[::-1])
    ranked = v[order]
    new = np.empty(len(v), dtype=bool)
    new[0] = True
    np.any(ranked[1:] != ranked[:-1], axis=1, out=new[1:])
    inverse = np.empty(len(v), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ranked[new], inverse
