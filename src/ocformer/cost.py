"""Readout, closed-form head and the terminal cost C_T.

The final tokens of a sequence are pooled into one feature vector (mean over the real
tokens: the layers, not the readout, must carry the information), and a linear head on
those features is solved in closed form by weighted ridge regression, onto one-hot
classes or onto real targets:

    W = argmin_W  sum_m w_m |W [f_m; 1] - y_m|^2 + ridge |W_features|^2

The terminal cost is the loss of that head: squared error (``"mse"``), or the 0-1 error
of its arg-max class (``"error"``), which is neither smooth nor convex and is a valid
terminal cost all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ocformer.errors import ConfigError

CostKind = Literal["mse", "error"]
COST_KINDS = ("mse", "error")


def readout(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens of each sequence.

    Args:
        tokens: float tensor of shape (..., n_tokens, dim).
        mask: bool tensor of shape (..., n_tokens); True marks a real token.

    Returns:
        Float tensor of shape (..., dim).
    """
    weights = mask.to(tokens.dtype)
    total = (tokens * weights[..., None]).sum(-2)
    return total / weights.sum(-1, keepdim=True)


@dataclass(frozen=True)
class Head:
    """A linear head ``outputs = features @ weight + bias``.

    Attributes:
        weight: float64 tensor of shape (dim, n_outputs).
        bias: float64 tensor of shape (n_outputs,).
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (n, n_outputs) for features of shape (n, dim)."""
        return features @ self.weight + self.bias


def targets_matrix(targets: torch.Tensor, n_classes: int | None) -> torch.Tensor:
    """One-hot rows for class indices, a column for real values: shape (n, outputs)."""
    if n_classes is None:
        return targets.to(torch.float64)[:, None]
    return torch.nn.functional.one_hot(targets.long(), n_classes).to(torch.float64)


def fit_head(
    features: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    n_classes: int | None,
    ridge: float,
) -> Head:
    """Weighted ridge regression of the targets on the features, in closed form.

    Args:
        features: float64 tensor of shape (n, dim).
        targets: tensor of shape (n,): class indices, or real values when
            ``n_classes`` is None.
        weights: float64 tensor of shape (n,), non-negative, summing to one.
        n_classes: number of classes, or None for regression.
        ridge: penalty on the feature weights (the bias is not penalised), >= 0.

    Returns:
        The fitted head.
    """
    design = torch.cat([features, torch.ones_like(features[:, :1])], dim=1)
    response = targets_matrix(targets, n_classes)

    weighted = design * weights[:, None]
    gram = design.T @ weighted  # (dim + 1, dim + 1)
    penalty = torch.full((design.shape[1],), ridge, dtype=torch.float64)
    penalty[-1] = 0.0
    gram = gram + torch.diag(penalty)

    # lstsq rather than solve: with ridge 0 and collapsed features the system is
    # singular, and the minimum-norm solution is still a valid optimal head.
    solution = torch.linalg.lstsq(gram, weighted.T @ response, driver="gelsd").solution
    return Head(weight=solution[:-1], bias=solution[-1])


def loss(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    kind: CostKind,
    n_classes: int | None,
) -> float:
    """Weighted loss of head outputs.

    Args:
        outputs: float tensor of shape (n, n_outputs).
        targets: tensor of shape (n,).
        weights: float tensor of shape (n,), summing to one.
        kind: ``"mse"`` (squared error summed over outputs, one-hot for classes) or
            ``"error"`` (0-1 error of the arg-max class).
        n_classes: number of classes, or None for regression.

    Returns:
        The weighted mean loss as a Python float.
    """
    check_cost(kind, n_classes)
    if kind == "error":
        wrong = (outputs.argmax(dim=1) != targets.long()).to(torch.float64)
        return float((weights * wrong).sum())
    residual = outputs - targets_matrix(targets, n_classes)
    return float((weights * residual.square().sum(dim=1)).sum())


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max output is the target class."""
    return float((outputs.argmax(dim=1) == targets.long()).to(torch.float64).mean())


def check_cost_kind(kind: str) -> None:
    """Reject a cost that does not exist."""
    if kind not in COST_KINDS:
        raise ConfigError(
            f"`cost` must be one of {', '.join(COST_KINDS)}, got {kind!r}; "
            "use mse (squared error) or error (0-1 error, classification only)."
        )


def check_cost(kind: str, n_classes: int | None) -> None:
    """Reject a cost that does not exist or does not fit the task."""
    check_cost_kind(kind)
    if kind == "error" and n_classes is None:
        raise ConfigError(
            "`cost` 'error' needs class targets, got a regression task; use --cost mse."
        )


def terminal_cost(
    features: torch.Tensor,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    kind: CostKind,
    n_classes: int | None,
    ridge: float,
) -> float:
    """C_T: the loss of the best closed-form head on pooled final features.

    Args:
        features: float64 tensor of shape (atoms, dim), the pooled final tokens.
        targets: array of shape (atoms,).
        weights: float array of shape (atoms,), summing to one.
        kind: the loss, ``"mse"`` or ``"error"``.
        n_classes: number of classes, or None for regression.
        ridge: ridge penalty of the head.

    Returns:
        The cost as a Python float.
    """
    targets_t = torch.as_tensor(targets)
    weights_t = torch.as_tensor(weights, dtype=torch.float64)
    head = fit_head(features, targets_t, weights_t, n_classes=n_classes, ridge=ridge)
    return loss(head(features), targets_t, weights_t, kind=kind, n_classes=n_classes)
