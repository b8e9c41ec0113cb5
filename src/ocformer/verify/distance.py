"""Distances the claims are measured in: W1 between training measures, and the
weight metric between plans.

The ground metric on (sequence, target) pairs is ``coreset.py``'s:

    d((mu, y), (mu', y')) = mean_p |x_p - x'_p|  +  |y - y'|      (regression)
                                                 +  2R [y != y']  (classification)

(tokens move only to the same position), and W1 between two weighted sets of pairs
is solved exactly by optimal transport (POT's network simplex).
"""

from __future__ import annotations

import numpy as np
import torch

from ocformer.coreset import sequence_distances
from ocformer.dynamics import LayerWeights

# The network simplex stops at 100,000 iterations by default, short of the optimum
# for a thousand atoms or more.
MAX_ITERATIONS = 10_000_000


def measure_distance(
    first: np.ndarray,
    first_targets: np.ndarray,
    second: np.ndarray,
    second_targets: np.ndarray,
    *,
    n_classes: int | None,
    radius: float,
) -> float:
    """W1 between the uniform measures on two sets of sequences.

    Args:
        first: float array of shape (M, n_tokens, dim), sequences in X, padding 0.
        first_targets: array of shape (M,).
        second: float array of shape (M', n_tokens, dim).
        second_targets: array of shape (M',).
        n_classes: number of classes, or None for regression targets.
        radius: R, the radius of X (a class mismatch costs 2R).

    Returns:
        ``W1(Lambda, Lambda')`` for ``Lambda = (1/M) sum_m delta_(mu_m, y_m)``.
    """
    import ot  # POT is slow to import; only the claims that measure W1 need it

    cost = sequence_distances(first, second)  # (M, M')
    if n_classes is None:
        cost = cost + np.abs(first_targets[:, None] - second_targets[None])
    else:
        cost = cost + 2 * radius * (first_targets[:, None] != second_targets[None])
    first_weights = np.full(len(first), 1.0 / len(first))
    second_weights = np.full(len(second), 1.0 / len(second))
    distance = ot.emd2(first_weights, second_weights, cost, numItermax=MAX_ITERATIONS)
    # The simplex returns tiny negative values for equal measures.
    return max(float(distance), 0.0)


def plan_distance(weights: LayerWeights, plan: tuple[int, ...], other) -> float:
    """Distance of two plans in the weight metric.

    ``sqrt(sum_t |W(a_t) - W(b_t)|^2)``: the Frobenius norm of the difference of the
    two stacks of layer weights, each layer flattened as ``LayerWeights.flatten``.

    Args:
        weights: the action set's weights, L actions.
        plan: action index per layer.
        other: another plan of the same length.
    """
    flat = weights.flatten()  # (L, n_weights)
    gaps = flat[list(plan)] - flat[list(other)]  # (n_layers, n_weights)
    return float(torch.linalg.vector_norm(gaps))
