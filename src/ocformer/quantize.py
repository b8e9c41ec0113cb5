"""State and measure quantizers: the first two of the three quantizations.

A token state is snapped to the nearest codeword of a finite codebook in the token set
X. A sequence then becomes a row of integer codes, and a training measure a finite set
of atoms ``(codes, target)`` with integer counts. Two atoms with equal codes and equal
targets are the same point of measure space, so they merge into one atom whose count is
the sum: what the solver manipulates is a measure, not a list.

Every measure is kept in canonical form (atoms sorted, duplicates merged) and carries a
stable 128-bit key of its bytes, which is how the solver recognises that two different
action histories reached the same quantized state.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ocformer.embedding import project
from ocformer.errors import ConfigError
from ocformer.frontier import measure_keys

logger = logging.getLogger(__name__)

CodebookKind = Literal["kmeans", "uniform"]

# Codes are stored as uint16 at most; one value is reserved for padding.
MAX_CODES = np.iinfo(np.uint16).max
# Points of X drawn to estimate a codebook's covering radius.
RADIUS_SAMPLES = 16384
# Points whose distances to the codewords are computed at once.
ENCODE_CHUNK = 65536


@dataclass(frozen=True)
class StateCodebook:
    """A finite set of codewords in the token set X.

    Attributes:
        codewords: float64 array of shape (codes, dim).
        radius: estimated covering radius of X, ``max_{x in X} min_c |x - c|``, taken
            over a seeded sample of X together with the training tokens (a lower
            estimate of the supremum; exact when the maximiser is a sampled point).
        data_radius: the same maximum over the embedded training tokens only.
        kind: ``"kmeans"`` or ``"uniform"``.
    """

    codewords: np.ndarray
    radius: float
    data_radius: float
    kind: str

    @property
    def size(self) -> int:
        """Number of codewords; the padding code equals this number."""
        return int(self.codewords.shape[0])

    @property
    def code_dtype(self) -> np.dtype:
        """Smallest unsigned integer type that holds every code and the padding code."""
        return np.dtype(np.uint8) if self.size < 256 else np.dtype(np.uint16)

    def encode(self, points: torch.Tensor, mask: torch.Tensor | None = None):
        """Index of the nearest codeword of every point, ties to the lowest index.

        The code of a point does not depend on the other points of the batch, bit for
        bit, so the DP and the brute-force oracle snap identical tokens to identical
        codes. It is the arg-min of the direct squared distances
        ``sum_k (x_k - c_k)^2`` (which depend on the point alone), found fast:

        1. Scores ``|c|^2 - 2 <x, c>`` for all codewords come from one matrix
           product. Their rounding depends on the batch, but both they (plus
           ``|x|^2``) and the direct distances are within ``gamma (|x| + |c|)^2`` of
           the exact squared distance, ``gamma = m u / (1 - m u)`` with u the unit
           roundoff and ``m = dim + 2``.
        2. Where no other codeword scores within ``tolerance = 8 gamma (|x| +
           max |c|)^2`` of the best (twice what the four errors of two codewords
           need), the best is the unique exact and the unique direct arg-min.
        3. The few other points (near ties, and non-finite ones) are re-encoded from
           the direct distances.

        Args:
            points: float tensor of shape (..., dim), on any device.
            mask: optional bool tensor of shape ``points.shape[:-1]``; masked-out
                (padding) points get the padding code ``size``.

        Returns:
            int64 tensor of shape ``points.shape[:-1]``, on the points' device.
        """
        dtype, device = points.dtype, points.device
        codewords = torch.as_tensor(self.codewords).to(device=device, dtype=dtype)
        flat = points.reshape(-1, points.shape[-1])  # (points, dim)
        squared = codewords.square().sum(dim=1)  # (codes,)

        # A float32 product may round its inputs to tf32 or bfloat16 when the user
        # allows it: bound the error by bfloat16's.
        eps = torch.finfo(dtype).eps
        if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            eps = 2.0**-7
        terms = flat.shape[1] + 2
        gamma = terms * eps / 2 / (1 - terms * eps / 2)
        largest = float(squared.max().sqrt())

        # Score matrices of about 2^18 entries stay in cache.
        rows = max(1, min(ENCODE_CHUNK, 2**18 // self.size))
        codes = torch.empty(flat.shape[0], dtype=torch.int64, device=device)
        for start in range(0, flat.shape[0], rows):
            chunk = flat[start : start + rows]
            scores = torch.addmm(squared, chunk, codewords.T, alpha=-2.0)
            best, chunk_codes = scores.min(dim=1)

            norms = torch.linalg.vector_norm(chunk, dim=1)
            tolerance = 8 * gamma * (norms + largest).square()
            # Exactly one codeword within tolerance of the best: no near tie. None
            # at all means a NaN score.
            within = scores <= (best + tolerance)[:, None]
            close = within.sum(dim=1, dtype=torch.int32) != 1
            if bool(close.any()):
                index = close.nonzero()[:, 0]
                near = chunk[index]
                distances = (near[:, None, :] - codewords[None]).square().sum(-1)
                chunk_codes[index] = distances.argmin(dim=1)
            codes[start : start + rows] = chunk_codes
        codes = codes.reshape(points.shape[:-1])

        if mask is not None:
            mask = mask.to(device)
            codes = torch.where(mask, codes, torch.full_like(codes, self.size))
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codewords of the given codes; the padding code decodes to the zero vector.

        Args:
            codes: integer tensor of any shape, on any device.

        Returns:
            float64 tensor of shape ``codes.shape + (dim,)``, on the codes' device.
        """
        codewords = torch.as_tensor(self.codewords, device=codes.device)
        table = torch.cat([codewords, codewords.new_zeros(1, codewords.shape[1])])
        return table[codes.long()]


def _sample_space(dim: int, space: str, radius: float, seed: int) -> np.ndarray:
    """Seeded uniform sample of X, shape (RADIUS_SAMPLES, dim)."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((RADIUS_SAMPLES, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    if space == "sphere":
        return radius * directions
    lengths = radius * rng.random(RADIUS_SAMPLES) ** (1.0 / dim)
    return directions * lengths[:, None]


def _max_distance(points: np.ndarray, codewords: np.ndarray) -> float:
    """Largest distance from a point to its nearest codeword."""
    if len(points) == 0:
        return 0.0
    squared = ((points[:, None, :] - codewords[None]) ** 2).sum(-1)
    return float(np.sqrt(squared.min(axis=1).max()))


def _finish(
    codewords: np.ndarray, tokens: np.ndarray, kind: str, *, space: str, radius: float
) -> StateCodebook:
    """Attach the covering radii to a codebook of codewords in X."""
    sample = _sample_space(codewords.shape[1], space, radius, seed=0)
    data_radius = _max_distance(tokens, codewords)
    space_radius = max(_max_distance(sample, codewords), data_radius)
    logger.info(
        "%s codebook: %d codes, radius %.4f", kind, len(codewords), space_radius
    )
    return StateCodebook(codewords, space_radius, data_radius, kind)


def _check_codes(codes: int) -> None:
    if codes < 2:
        raise ConfigError(
            f"`codes` must be >= 2, got {codes}; use at least two codewords per token."
        )
    if codes >= MAX_CODES:
        raise ConfigError(
            f"`codes` must be < {MAX_CODES}, got {codes}; codes are stored as uint16."
        )


def uniform_codebook(
    *, dim: int, levels: int, space: str = "ball", radius: float = 1.0
) -> StateCodebook:
    """Codebook of a uniform grid: ``levels`` points per axis on ``[-R, R]^dim``.

    Grid points outside X are projected onto it and repeated points kept once, so the
    codebook may hold fewer than ``levels ** dim`` codes. On the ball the covering
    radius is at most ``R sqrt(dim) / (levels - 1)``: projection onto a convex set
    moves no codeword away from a point of the set.

    Args:
        dim: dimension of the token set X.
        levels: grid points per axis, >= 2.
        space: ``"ball"`` or ``"sphere"``.
        radius: R, the radius of X.

    Returns:
        The codebook, its codewords in lexicographic grid order.

    Example:
        >>> book = uniform_codebook(dim=1, levels=3)
        >>> book.codewords.ravel().tolist()
        [-1.0, 0.0, 1.0]
    """
    if levels < 2:
        raise ConfigError(
            f"`levels` must be >= 2, got {levels}; a grid needs two points per axis."
        )
    if levels**dim >= MAX_CODES:
        raise ConfigError(
            f"a uniform grid of {levels} levels per axis in {dim} dimensions has "
            f"{levels**dim} codes, more than {MAX_CODES - 1}; use fewer levels "
            "(--codes), a smaller --dim or the kmeans codebook."
        )

    axis = np.linspace(-radius, radius, levels)
    grid = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    projected = project(torch.as_tensor(grid), space=space, radius=radius).numpy()

    # np.unique would sort; keep the first occurrence of each point in grid order.
    _, first = np.unique(projected.round(12), axis=0, return_index=True)
    codewords = projected[np.sort(first)]
    return _finish(codewords, np.empty((0, dim)), "uniform", space=space, radius=radius)


def kmeans_codebook(
    tokens: np.ndarray,
    *,
    codes: int,
    space: str = "ball",
    radius: float = 1.0,
    seed: int = 0,
) -> StateCodebook:
    """Lloyd (k-means) codebook fitted on embedded training tokens.

    Args:
        tokens: float array of shape (n_points, dim), the real (unpadded) embedded
            training tokens.
        codes: number of codewords, >= 2 and at most the number of distinct tokens.
        space: ``"ball"`` or ``"sphere"``; the centres are projected onto X.
        radius: R, the radius of X.
        seed: seed of the k-means initialisation.

    Returns:
        The codebook, codewords sorted lexicographically so that the code of a
        token does not depend on k-means' internal cluster order.

    Raises:
        ConfigError: if ``codes`` is < 2 or exceeds the number of distinct tokens.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    _check_codes(codes)
    distinct = len(np.unique(tokens, axis=0))
    if codes > distinct:
        raise ConfigError(
            f"`codes` must be at most the number of distinct training tokens "
            f"({distinct}), got {codes}; use fewer codes."
        )

    # Tokens that differ only by rounding can leave fewer clusters than asked for;
    # scikit-learn then warns, and a codebook with duplicate codewords is refused.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            fitted = KMeans(n_clusters=codes, n_init=4, random_state=seed).fit(tokens)
        except ConvergenceWarning:
            raise ConfigError(
                f"k-means found fewer than {codes} distinct clusters in the training "
                "tokens; use fewer --codes."
            ) from None
    centres = torch.as_tensor(fitted.cluster_centers_, dtype=torch.float64)
    centres = project(centres, space=space, radius=radius).numpy()
    centres = centres[np.lexsort(centres.T[::-1])]
    return _finish(centres, tokens, "kmeans", space=space, radius=radius)


@dataclass(frozen=True)
class Measure:
    """A quantized training measure in canonical form.

    ``Lambda = sum_m (counts_m / total) delta_(codes_m, targets_m)``. Atoms are sorted
    lexicographically by codes then target, and no two atoms are equal.

    Attributes:
        codes: unsigned integer array of shape (atoms, n_tokens); the codebook's
            padding code marks padding tokens.
        targets: array of shape (atoms,): int64 class indices or float64 values.
        counts: int64 array of shape (atoms,), the weight numerators.
        key: 16-byte canonical key of the measure (``frontier.measure_keys``).
    """

    codes: np.ndarray
    targets: np.ndarray
    counts: np.ndarray
    key: bytes

    @property
    def n_atoms(self) -> int:
        return int(self.codes.shape[0])

    @property
    def weights(self) -> np.ndarray:
        """Atom weights, shape (atoms,), summing to one."""
        return self.counts / self.counts.sum()


def canonical_measure(
    codes: np.ndarray, targets: np.ndarray, counts: np.ndarray
) -> Measure:
    """Sort atoms, merge equal ones, and hash the result.

    Args:
        codes: unsigned integer array of shape (atoms, n_tokens).
        targets: array of shape (atoms,), integer or float.
        counts: integer array of shape (atoms,), positive.

    Returns:
        The canonical measure; equal measures give byte-equal arrays and equal keys,
        whatever the order of their atoms and whatever the sign of a zero target.
    """
    if targets.dtype.kind == "f":
        # -0.0 + 0.0 is +0.0: the two zeros must not hash apart.
        targets = targets.astype(np.float64) + 0.0
    else:
        targets = targets.astype(np.int64)

    order = np.lexsort((targets, *codes.T[::-1]))
    codes, targets, counts = codes[order], targets[order], counts[order]

    # An atom starts a new group unless it equals its predecessor in codes and target.
    starts = np.ones(len(codes), dtype=bool)
    starts[1:] = (codes[1:] != codes[:-1]).any(axis=1) | (targets[1:] != targets[:-1])
    first = np.flatnonzero(starts)
    codes = np.ascontiguousarray(codes[first])
    targets = np.ascontiguousarray(targets[first])
    counts = np.add.reduceat(counts.astype(np.int64), first)

    (key,) = measure_keys(codes[None], targets, counts)
    return Measure(codes, targets, counts, key)
