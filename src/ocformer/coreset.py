"""Measure quantization: reduce M training sequences to N weighted atoms.

The training measure ``Lambda_0 = (1/M) sum_m delta_(mu_m, y_m)`` is replaced by at most
N atoms, each a real training sequence, with weights on the 1/N lattice. Sequences are
clustered within each class (or jointly with the standardised target, for regression),
each cluster is represented by its medoid-like member nearest the centroid, and the
cluster shares are rounded to multiples of 1/N by the largest-remainder method.

The reported radius is ``W1(Lambda_0, reduced)``, computed exactly by optimal transport
(POT) under the ground metric on (sequence, target) pairs

    d((mu, y), (mu', y')) = mean_p |x_p - x'_p|  +  |y - y'|      (regression)
                                                 +  2R [y != y']  (classification)

where the first term is the W1 distance between two sequence measures on (token,
position) when tokens may only be transported to the same position (an infinite cost
across positions): the identity coupling is then the optimal one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ocformer.errors import ConfigError


@dataclass(frozen=True)
class Coreset:
    """A reduced training measure.

    Attributes:
        index: int64 array of shape (atoms,), the training sequences kept.
        counts: int64 array of shape (atoms,), weights times ``total``.
        total: N, the lattice denominator.
        distance: W1 between the full and the reduced training measures.
    """

    index: np.ndarray
    counts: np.ndarray
    total: int
    distance: float


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Round non-negative shares summing to one onto integers summing to ``total``.

    Each share gets ``floor(share * total)``; the units left over go to the largest
    fractional parts, ties to the lowest index.

    Example:
        >>> largest_remainder(np.array([0.5, 0.3, 0.2]), 4).tolist()
        [2, 1, 1]
    """
    scaled = shares * total
    counts = np.floor(scaled).astype(np.int64)
    left = total - int(counts.sum())
    order = np.argsort(-(scaled - counts), kind="stable")
    counts[order[:left]] += 1
    return counts


def sequence_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Mean token distance at equal positions, shape (len(first), len(second)).

    Args:
        first: float array of shape (a, n_tokens, dim); padding tokens are zero.
        second: float array of shape (b, n_tokens, dim).
    """
    from scipy.spatial.distance import cdist

    # One position at a time: the (a, b, n_tokens, dim) array of all gaps would take
    # gigabytes for a few thousand sequences.
    n_tokens = first.shape[1]
    total = np.zeros((len(first), len(second)))
    for position in range(n_tokens):
        total += cdist(first[:, position], second[:, position])
    return total / n_tokens


def reduce_measure(
    tokens: np.ndarray,
    targets: np.ndarray,
    *,
    atoms: int,
    n_classes: int | None,
    radius: float,
    seed: int = 0,
) -> Coreset:
    """Reduce the training measure to at most ``atoms`` atoms on the 1/atoms lattice.

    Args:
        tokens: float array of shape (M, n_tokens, dim), embedded sequences with zero
            padding tokens.
        targets: array of shape (M,): class indices, or real values when
            ``n_classes`` is None.
        atoms: N, the number of atoms and the lattice denominator.
        n_classes: number of classes, or None for regression.
        radius: R, the radius of the token set (the class-mismatch cost is 2R).
        seed: seed of the k-means clustering.

    Returns:
        The coreset and its W1 distance to the full measure.

    Raises:
        ConfigError: if ``atoms`` is < 1 or larger than M.
    """
    from sklearn.cluster import KMeans

    n_sequences = len(tokens)
    if not 1 <= atoms <= n_sequences:
        raise ConfigError(
            f"`atoms` must be between 1 and the number of training sequences "
            f"({n_sequences}), got {atoms}; omit it to keep every sequence."
        )
    flat = tokens.reshape(n_sequences, -1)  # (M, n_tokens * dim)

    # Clusters never mix classes; for regression the target joins the features.
    if n_classes is None:
        spread = targets.std() or 1.0
        groups = [np.arange(n_sequences)]
        features = np.hstack([flat, ((targets - targets.mean()) / spread)[:, None]])
    else:
        groups = [np.flatnonzero(targets == c) for c in range(n_classes)]
        groups = [g for g in groups if len(g)]
        features = flat
    budget = largest_remainder(np.array([len(g) for g in groups]) / n_sequences, atoms)

    index, sizes = [], []
    for group, clusters in zip(groups, budget, strict=True):
        clusters = int(min(max(clusters, 1), len(np.unique(features[group], axis=0))))
        fitted = KMeans(n_clusters=clusters, n_init=2, random_state=seed)
        labels = fitted.fit_predict(features[group])
        for cluster in range(clusters):
            members = group[labels == cluster]
            if len(members) == 0:  # k-means may leave a cluster empty
                continue
            gaps = features[members] - fitted.cluster_centers_[cluster]
            index.append(members[np.argmin((gaps**2).sum(1))])
            sizes.append(len(members))

    counts = largest_remainder(np.array(sizes) / n_sequences, atoms)
    keep = counts > 0
    index, counts = np.array(index)[keep], counts[keep]

    # Exact W1 between the uniform full measure and the reduced one.
    distance = measure_distance(
        tokens,
        targets,
        tokens[index],
        targets[index],
        n_classes=n_classes,
        radius=radius,
        second_weights=counts / atoms,
    )
    return Coreset(index.astype(np.int64), counts, atoms, distance)


def measure_distance(
    first: np.ndarray,
    first_targets: np.ndarray,
    second: np.ndarray,
    second_targets: np.ndarray,
    *,
    n_classes: int | None,
    radius: float,
    second_weights: np.ndarray | None = None,
) -> float:
    """W1 between two training measures under the ground metric above, exactly.

    Args:
        first: float array of shape (M, n_tokens, dim), sequences in X, padding 0;
            the first measure is uniform on them.
        first_targets: array of shape (M,).
        second: float array of shape (M', n_tokens, dim).
        second_targets: array of shape (M',).
        n_classes: number of classes, or None for regression targets.
        radius: R, the radius of X (a class mismatch costs 2R).
        second_weights: weights of the second measure, shape (M',), summing to
            one; uniform when None.

    Returns:
        ``W1(Lambda, Lambda')`` by optimal transport (POT's network simplex).
    """
    import ot  # POT is slow to import

    cost = sequence_distances(first, second)  # (M, M')
    if n_classes is None:
        cost = cost + np.abs(first_targets[:, None] - second_targets[None])
    else:
        cost = cost + 2 * radius * (first_targets[:, None] != second_targets[None])
    first_weights = np.full(len(first), 1.0 / len(first))
    if second_weights is None:
        second_weights = np.full(len(second), 1.0 / len(second))
    # The default iteration cap stops short of the optimum (with a warning) for a
    # few thousand sequences; the network simplex needs far fewer than this.
    distance = ot.emd2(first_weights, second_weights, cost, numItermax=10_000_000)
    # The simplex returns tiny negative values for equal measures.
    return max(float(distance), 0.0)
