"""Frontiers of quantized measures: canonical keys in batches, and the W1 epsilon-net.

A state of the solver is stored compactly as the codes of the training atoms in a fixed
order, an array of shape (atoms, n_tokens) of uint8 or uint16: atom ``m`` of every state
descends from atom ``m`` of Lambda_0, so atoms keep their identity from layer to layer.

Two histories can reach the same *measure* with atoms in different places, so states
are compared by a canonical key of the measure, not by their arrays: every atom row
(codes and target) is hashed to 128 bits, rows are sorted by hash, equal rows merge
into one with the summed count, and the merged table is hashed again. All of it runs
on whole batches of states at once.

The epsilon-net (DESIGN.md section 3.2) quantizes measure space itself: a new state
within W1 distance ``epsilon`` of a kept state of its layer is represented by it. The
W1 distance is bounded from above by the identity coupling, atom ``m`` to atom ``m``
and position ``p`` to position ``p``:

    W1(Lambda, Lambda') <= sum_m w_m (1 / n_m) sum_p |c(a_mp) - c(b_mp)|

with ``c`` the codewords and ``n_m`` the real tokens of atom m. Its lower bound
``|mean(Lambda) - mean(Lambda')| <= W1`` (the mean token is 1-Lipschitz) lets a k-d tree
over mean tokens find the candidates, so the search is not quadratic.
"""

from __future__ import annotations

import numpy as np
import xxhash
from scipy.spatial import cKDTree

# Odd 64-bit constants of the row hash (from the splitmix64 finaliser).
_SEEDS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03))
_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix(state: np.ndarray, word: np.ndarray, seed: int) -> np.ndarray:
    """One round of a 64-bit multiply-xorshift hash, elementwise (wraps mod 2^64)."""
    state = (state ^ word) * _MULTIPLIERS[seed]
    state ^= state >> np.uint64(31)
    state *= _MULTIPLIERS[1 - seed]
    return state ^ (state >> np.uint64(29))


def row_hashes(codes: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Two independent 64-bit hashes of every atom row (its codes and its target).

    Args:
        codes: unsigned integer array of shape (..., atoms, n_tokens).
        targets: int64 or float64 array broadcastable to ``codes.shape[:-1]``.

    Returns:
        Two uint64 arrays of shape ``codes.shape[:-1]``.
    """
    row_bytes = np.ascontiguousarray(codes).view(np.uint8)
    row_bytes = row_bytes.reshape(*codes.shape[:-1], -1)
    padding = -row_bytes.shape[-1] % 8
    if padding:
        pad = np.zeros((*row_bytes.shape[:-1], padding), dtype=np.uint8)
        row_bytes = np.concatenate([row_bytes, pad], axis=-1)
    words = np.ascontiguousarray(row_bytes).view(np.uint64)  # (..., atoms, w)

    # -0.0 + 0.0 is +0.0, so the two zeros hash alike.
    targets = np.asarray(targets)
    if targets.dtype.kind == "f":
        target_bits = (targets.astype(np.float64) + 0.0).view(np.uint64)
    else:
        target_bits = targets.astype(np.int64).view(np.uint64)
    target_bits = np.broadcast_to(target_bits, codes.shape[:-1])

    hashes = []
    for seed in (0, 1):
        state = np.full(codes.shape[:-1], _SEEDS[seed], dtype=np.uint64)
        for column in range(words.shape[-1]):
            state = _mix(state, words[..., column], seed)
        hashes.append(_mix(state, target_bits, seed))
    return tuple(hashes)


def measure_keys(
    codes: np.ndarray, targets: np.ndarray, counts: np.ndarray
) -> list[bytes]:
    """Canonical 16-byte keys of a batch of measures.

    Two states get equal keys exactly when they are the same measure: the same atom
    rows with the same total weight on each, whatever the order of the atoms, however
    the weight is split between equal atoms and whatever the sign of a zero target
    (up to 128-bit hash collisions).

    Args:
        codes: unsigned integer array of shape (states, atoms, n_tokens).
        targets: array of shape (atoms,) or (states, atoms).
        counts: integer array of shape (atoms,) or (states, atoms).

    Returns:
        One key per state.
    """
    n_states, n_atoms = codes.shape[:2]
    first, second = row_hashes(codes, targets)
    counts = np.broadcast_to(np.asarray(counts, dtype=np.int64), (n_states, n_atoms))

    # Sorting by the first hash alone makes equal rows adjacent unless two different
    # rows share all 64 bits of it; a missed merge then costs sharing, not exactness.
    order = np.argsort(first, axis=-1, kind="stable")  # (states, atoms)
    first = np.take_along_axis(first, order, axis=-1)
    second = np.take_along_axis(second, order, axis=-1)
    counts = np.take_along_axis(counts, order, axis=-1)

    # Equal rows are adjacent now; each group becomes one row with the summed count,
    # groups packed to the front of the state's table and zeros after them.
    starts = np.ones((n_states, n_atoms), dtype=bool)
    starts[:, 1:] = (first[:, 1:] != first[:, :-1]) | (second[:, 1:] != second[:, :-1])
    group = np.cumsum(starts, axis=1) - 1 + n_atoms * np.arange(n_states)[:, None]
    totals = np.bincount(group.ravel(), counts.ravel(), minlength=n_states * n_atoms)
    table = np.zeros((n_states * n_atoms, 3), dtype=np.uint64)
    table[group[starts], 0] = first[starts]
    table[group[starts], 1] = second[starts]
    table[:, 2] = totals.astype(np.uint64)
    table = table.reshape(n_states, n_atoms * 3)

    # Only the groups are hashed, so the key does not depend on the number of atoms
    # the measure happens to be written with.
    groups = starts.sum(axis=1) * 3
    return [
        xxhash.xxh3_128_digest(row[:size].tobytes())
        for row, size in zip(table, groups, strict=True)
    ]


class MeasureNet:
    """An epsilon-net of the states of one layer, in the identity-coupling W1 bound.

    States are offered in a deterministic order; each one either joins the net or is
    represented by the nearest kept state within ``epsilon`` (ties to the earliest).

    Args:
        codewords: float array of shape (codes, dim); the padding code is ``codes``.
        weights: float array of shape (atoms,), the atom weights, summing to one.
        lengths: int array of shape (atoms,), the real tokens of each atom.
        epsilon: the radius of the net, > 0.
    """

    def __init__(self, codewords, weights, lengths, epsilon: float):
        table = np.vstack([codewords, np.zeros((1, codewords.shape[1]))])
        self.points = table  # (codes + 1, dim)
        self.distances = np.linalg.norm(table[:, None] - table[None], axis=-1)
        self.distances[-1, :] = self.distances[:, -1] = 0.0  # padding moves no mass
        self.token_weights = weights / lengths  # (atoms,)
        self.epsilon = epsilon
        self.states: list[np.ndarray] = []
        self.means: list[np.ndarray] = []
        self.tree: cKDTree | None = None
        self.indexed = 0

    def __len__(self) -> int:
        return len(self.states)

    def mean(self, codes: np.ndarray) -> np.ndarray:
        """Mean token of a state, shape (dim,): a 1-Lipschitz function of it."""
        return np.einsum("m,mpd->d", self.token_weights, self.points[codes])

    def bound(self, codes: np.ndarray, kept: list[int]) -> np.ndarray:
        """Identity-coupling W1 bounds from ``codes`` to kept states, (len(kept),)."""
        others = np.stack([self.states[k] for k in kept])  # (k, atoms, n_tokens)
        gaps = self.distances[codes[None].astype(np.intp), others.astype(np.intp)]
        return np.einsum("m,kmp->k", self.token_weights, gaps)

    def find(self, codes: np.ndarray) -> tuple[int, float] | None:
        """The nearest kept state within epsilon and its bound, or None."""
        if not self.states:
            return None
        centre = self.mean(codes)
        candidates = []
        if self.tree is not None:
            candidates = self.tree.query_ball_point(centre, self.epsilon * (1 + 1e-12))
        recent = np.asarray(self.means[self.indexed :])
        if len(recent):
            near = np.linalg.norm(recent - centre, axis=1) <= self.epsilon * (1 + 1e-12)
            candidates = [*candidates, *(self.indexed + np.flatnonzero(near))]
        if not candidates:
            return None

        candidates = sorted(int(c) for c in candidates)
        bounds = self.bound(codes, candidates)
        best = int(np.argmin(bounds))  # first of the ties: the earliest kept state
        if bounds[best] <= self.epsilon:
            return candidates[best], float(bounds[best])
        return None

    def add(self, codes: np.ndarray) -> int:
        """Keep a new state; returns its index in the net."""
        self.states.append(codes)
        self.means.append(self.mean(codes))
        # Rebuild the tree when the unindexed tail has doubled: amortised O(log n).
        if len(self.states) - self.indexed > max(64, self.indexed):
            self.tree = cKDTree(np.asarray(self.means))
            self.indexed = len(self.states)
        return len(self.states) - 1
