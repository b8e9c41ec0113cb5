"""Readout, closed-form head and losses."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from ocformer.cost import (
    check_cost,
    fit_head,
    loss,
    readout,
    terminal_cost,
)
from ocformer.errors import ConfigError


def test_readout_averages_real_tokens_only():
    """Padding tokens do not enter the mean."""
    tokens = torch.tensor(
        [[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]], dtype=torch.float64
    )
    mask = torch.tensor([[True, True, False]])
    assert readout(tokens, mask).tolist() == [[2.0, 1.0]]


def test_fit_head_matches_scikit_learn_weighted_ridge():
    """The closed-form head equals scikit-learn's Ridge with sample weights."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 3))
    targets = features @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=40)
    weights = rng.random(40)
    weights /= weights.sum()
    head = fit_head(
        torch.as_tensor(features),
        torch.as_tensor(targets),
        torch.as_tensor(weights),
        n_classes=None,
        ridge=0.01,
    )
    reference = Ridge(alpha=0.01).fit(features, targets, sample_weight=weights)
    np.testing.assert_allclose(head.weight[:, 0].numpy(), reference.coef_, atol=1e-8)
    np.testing.assert_allclose(float(head.bias[0]), reference.intercept_, atol=1e-8)


def test_error_cost_counts_weighted_mistakes():
    """The 0-1 loss is the weight of misclassified rows."""
    outputs = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, 0, 1])
    weights = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert loss(outputs, targets, weights, kind="error", n_classes=2) == 0.5


def test_mse_cost_uses_one_hot_classes():
    """Squared error against one-hot rows, summed over classes."""
    outputs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    targets = torch.tensor([0, 1])
    weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert loss(outputs, targets, weights, kind="mse", n_classes=2) == pytest.approx(
        0.25
    )


def test_terminal_cost_is_zero_for_separable_features():
    """Features that determine the class give a perfect head under the 0-1 cost."""
    features = torch.tensor([[0.0], [0.1], [1.0], [1.1]], dtype=torch.float64)
    cost = terminal_cost(
        features,
        np.array([0, 0, 1, 1]),
        np.full(4, 0.25),
        kind="error",
        n_classes=2,
        ridge=0.0,
    )
    assert cost == 0.0


def test_error_cost_on_regression_is_rejected():
    """The 0-1 cost needs classes."""
    with pytest.raises(ConfigError, match=r"needs class targets.*use --cost mse"):
        check_cost("error", None)


def test_unknown_cost_is_rejected():
    """An unknown cost name lists the valid ones."""
    with pytest.raises(ConfigError, match="`cost` must be one of mse, error, got 'l1'"):
        check_cost("l1", 2)
