"""The weight metric between plans, in which claim 5 measures how plans settle.

(W1 between training measures is ``coreset.measure_distance``.)
"""

from __future__ import annotations

import torch

from ocformer.dynamics import LayerWeights


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
