"""The finite space of quantized measures: multisets of N sequence types, ranked.

A *sequence type* is a code sequence ``(c_0, ..., c_{n-1})`` in ``{0..K-1}^n`` (K
codewords, n tokens, all real) with a class ``y`` in ``{0..C-1}``; there are
``S = K^n C`` of them. A quantized measure with weights on the 1/N lattice is a
multiset of N types, so the space holds ``binom(S + N - 1, N)`` measures. Each has an
index, and the whole space is enumerated in index order as an array of types, so
that full-space dynamic programming (``ocformer.policy``) works on integer arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ocformer.errors import ConfigError, DataError
from ocformer.quantize import Measure, canonical_measure


@dataclass(frozen=True)
class MeasureSpace:
    """Every measure of N atoms on the 1/N lattice over ``S = K^n C`` sequence types.

    A type's index is ``(sum_p c_p K^(n-1-p)) C + y``, so increasing type order is the
    canonical atom order of ``quantize.canonical_measure`` (codes lexicographically,
    then the class). A measure is written as its N types in increasing order,
    ``t_0 <= ... <= t_{N-1}`` (an atom of weight k/N appears k times), and its index
    is the colexicographic rank of the N-subset ``{t_i + i}`` of ``{0..S+N-2}``:

        index = sum_i binom(t_i + i, i + 1),

    a bijection onto ``0 .. binom(S + N - 1, N) - 1``.

    Attributes:
        n_codes: K, the codewords of the state codebook.
        n_tokens: n, the tokens of a sequence.
        n_classes: C, the classes.
        atoms: N, the lattice denominator.

    Example:
        >>> space = MeasureSpace(n_codes=2, n_tokens=1, n_classes=1, atoms=2)
        >>> space.size, space.enumerate().tolist()
        (3, [[0, 0], [0, 1], [1, 1]])
        >>> space.rank(np.array([0, 1])).item()
        1
    """

    n_codes: int
    n_tokens: int
    n_classes: int
    atoms: int

    @property
    def n_sequences(self) -> int:
        """K^n, the code sequences."""
        return self.n_codes**self.n_tokens

    @property
    def n_types(self) -> int:
        """S = K^n C, the sequence types."""
        return self.n_sequences * self.n_classes

    @property
    def size(self) -> int:
        """binom(S + N - 1, N), the measures."""
        return math.comb(self.n_types + self.atoms - 1, self.atoms)

    @cached_property
    def _binomials(self) -> np.ndarray:
        """binom(x, j) for x < S + N - 1 and j <= N, int64; entries above ``size``
        are capped there (a valid rank never sums one)."""
        rows = range(self.n_types + self.atoms - 1)
        return np.array(
            [
                [min(math.comb(x, j), self.size) for j in range(self.atoms + 1)]
                for x in rows
            ],
            dtype=np.int64,
        )

    def sequences(self) -> np.ndarray:
        """Every code sequence in lexicographic order, int64 of shape (K^n, n)."""
        axes = np.meshgrid(*[np.arange(self.n_codes)] * self.n_tokens, indexing="ij")
        return np.stack([axis.reshape(-1) for axis in axes], axis=1)

    def type_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Codes (S, n) and class (S,) of every type, both int64, in index order."""
        codes = np.repeat(self.sequences(), self.n_classes, axis=0)
        classes = np.tile(np.arange(self.n_classes), self.n_sequences)
        return codes, classes

    def rank(self, types: np.ndarray) -> np.ndarray:
        """Indices of measures given as increasing types: (..., N) -> (...), int64."""
        shifted = types + np.arange(self.atoms)
        return self._binomials[shifted, np.arange(1, self.atoms + 1)].sum(axis=-1)

    def unrank(self, index: int) -> np.ndarray:
        """The increasing types of measure ``index``, int64 of shape (N,)."""
        if not 0 <= index < self.size:
            raise ConfigError(
                f"`index` must be in [0, {self.size}), got {index}; the space has "
                f"{self.size} measures."
            )
        left, shifted = int(index), np.empty(self.atoms, dtype=np.int64)
        for position in reversed(range(self.atoms)):
            column = self._binomials[:, position + 1]
            shifted[position] = np.searchsorted(column, left, side="right") - 1
            left -= int(column[shifted[position]])
        return shifted - np.arange(self.atoms)

    def enumerate(self) -> np.ndarray:
        """Every measure as increasing types, int64 of shape (size, N), row = index.

        Colex order of k-subsets: those with largest element v come after all those
        with a smaller one, and their other elements run through the first
        ``binom(v, k - 1)`` (k-1)-subsets in colex order.
        """
        top = self.n_types + self.atoms - 1
        subsets = np.arange(top, dtype=np.int64)[:, None]  # (top, 1)
        for size in range(2, self.atoms + 1):
            blocks = []
            for largest in range(size - 1, top):
                head = subsets[: math.comb(largest, size - 1)]
                tail = np.full((len(head), 1), largest, dtype=np.int64)
                blocks.append(np.hstack([head, tail]))
            subsets = np.concatenate(blocks)  # (binom(top, size), size)
        return subsets - np.arange(self.atoms)

    def types(self, measure: Measure) -> np.ndarray:
        """The increasing types of a quantized measure, int64 of shape (N,).

        Raises:
            DataError: if the measure has another number of tokens, padding tokens,
                codes or classes outside the space, or a total count other than N.
        """
        codes = np.asarray(measure.codes).astype(np.int64)
        targets, counts = np.asarray(measure.targets), np.asarray(measure.counts)
        if codes.ndim != 2 or codes.shape[1] != self.n_tokens:
            raise DataError(
                f"the measure's codes must have shape (atoms, {self.n_tokens}), got "
                f"{codes.shape}; quantize sequences of {self.n_tokens} tokens."
            )
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_codes):
            raise DataError(
                f"the measure's codes must lie in [0, {self.n_codes}), got "
                f"{codes.max()}; the policy table covers sequences whose tokens are "
                "all real, quantized with its codebook (padding has no type)."
            )
        if (
            targets.dtype.kind not in "iu"
            or not ((targets >= 0) & (targets < self.n_classes)).all()
        ):
            raise DataError(
                f"the measure's targets must be class indices in "
                f"[0, {self.n_classes}), got {targets.tolist()}; use a dataset with "
                "the table's classes."
            )
        total = int(counts.sum())
        if (counts <= 0).any() or total != self.atoms:
            raise DataError(
                f"the measure's counts must be positive and sum to N = {self.atoms} "
                f"(weights on the 1/{self.atoms} lattice), got a total of {total}; "
                f"reduce the data to {self.atoms} atoms (--atoms {self.atoms})."
            )
        powers = self.n_codes ** np.arange(self.n_tokens - 1, -1, -1)
        types = (codes @ powers) * self.n_classes + targets.astype(np.int64)
        return np.sort(np.repeat(types, counts.astype(np.int64)))

    def measure(self, types: np.ndarray) -> Measure:
        """The canonical measure of N increasing types."""
        codes, classes = self.type_codes()
        distinct, counts = np.unique(types, return_counts=True)
        dtype = np.uint8 if self.n_codes < 256 else np.uint16
        return canonical_measure(
            codes[distinct].astype(dtype), classes[distinct], counts.astype(np.int64)
        )
