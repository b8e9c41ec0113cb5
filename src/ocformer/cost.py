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


def check_cost(kind: str, n_classes: int | None) -> None:
    """Reject a cost that does not exist or does not fit the task."""
    if kind not in COST_KINDS:
        raise ConfigError(
            f"`cost` must be one of {', '.join(COST_KINDS)}, got {kind!r}; "
            "use mse (squared error) or error (0-1 error, classification only)."
        )
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


# A ridge system is solved by Cholesky when its condition number is certified below
# this; otherwise (and always without ridge) by the SVD-based least squares of
# `fit_head`, which stays correct for singular systems.
MAX_CONDITION = 1e8
# Entries of the largest temporary (states x atoms x outputs) of one batch.
COST_BATCH_ELEMENTS = 2**22


def terminal_costs(
    features: torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    *,
    kind: CostKind,
    n_classes: int | None,
    ridge: float,
) -> np.ndarray:
    """C_T of S states at once: `terminal_cost` of each, all heads solved together.

    Each state s has its own weighted ridge system ``(D_s^T W_s D_s + ridge I') h =
    D_s^T W_s Y_s`` with ``D_s = [features_s, 1]`` and ``I'`` the identity without the
    bias entry, solved in one batch. The cost of a state does not depend on which
    other states share the call.

    Which solver: with ``ridge > 0`` the matrix is positive definite, with (``w`` the
    weights, ``f_bar`` their weighted mean feature)

        lambda_min >= ridge * sum(w) / (sum(w) * (1 + |f_bar|^2) + ridge)
        lambda_max <= trace,

    and when that bound on the condition number is below `MAX_CONDITION` a Cholesky
    solve is accurate to about ``1e-8`` relative, far inside what the costs need.
    Other systems (``ridge == 0``, collapsed features) go to `fit_head`'s SVD least
    squares, whose minimum-norm solution is an optimal head even for a singular
    system: every optimal head has the same fitted outputs, hence the same cost.

    Args:
        features: float64 tensor of shape (S, atoms, dim), the pooled final tokens.
        targets: array of shape (S, atoms), or (atoms,) shared by every state.
        weights: float array of shape (S, atoms), or (atoms,) shared; each row
            non-negative and summing to one.
        kind: the loss, ``"mse"`` or ``"error"``.
        n_classes: number of classes, or None for regression.
        ridge: ridge penalty of the head, >= 0.

    Returns:
        float64 array of shape (S,), equal to `terminal_cost` of each state up to
        rounding (1e-12 in the tests).

    Raises:
        ConfigError: on a cost that does not exist or does not fit the task.
    """
    check_cost(kind, n_classes)
    n_states, n_atoms, dim = features.shape
    # Shared targets and weights stay (1, atoms): one one-hot table serves all.
    targets_t = torch.as_tensor(targets, device=features.device)
    targets_t = targets_t.reshape(-1, n_atoms)  # (S or 1, atoms)
    weights_t = torch.as_tensor(weights, dtype=torch.float64)
    weights_t = weights_t.to(features.device).reshape(-1, n_atoms)

    outputs = n_classes or 1
    chunk = max(1, COST_BATCH_ELEMENTS // (n_atoms * max(dim + 1, outputs)))
    costs = [
        _batch_costs(
            features[start : start + chunk],
            targets_t if len(targets_t) == 1 else targets_t[start : start + chunk],
            weights_t if len(weights_t) == 1 else weights_t[start : start + chunk],
            kind=kind,
            n_classes=n_classes,
            ridge=ridge,
        )
        for start in range(0, n_states, chunk)
    ]
    if not costs:
        return np.empty(0)
    return torch.cat(costs).cpu().numpy()


def _batch_costs(
    features: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    kind: CostKind,
    n_classes: int | None,
    ridge: float,
) -> torch.Tensor:
    """`terminal_costs` of one batch: (S, atoms, dim) features -> (S,) costs.

    The normal equations are assembled from blocks, ``[[F^T W F + ridge I, F^T w],
    [w^T F, sum(w)]]``, without materialising the design matrix ``[F, 1]``.
    """
    n_states, _, dim = features.shape
    if n_classes is None:
        response = targets.to(torch.float64)[..., None]  # (S, atoms, 1)
    else:
        response = torch.nn.functional.one_hot(targets.long(), n_classes)
        response = response.to(torch.float64)  # (S, atoms, classes)

    weighted = features * weights[..., None]  # (S, atoms, dim)
    gram = features.new_empty(n_states, dim + 1, dim + 1)
    gram[:, :dim, :dim] = weighted.transpose(1, 2) @ features
    gram[:, :dim, :dim].diagonal(dim1=-2, dim2=-1).add_(ridge)
    gram[:, :dim, dim] = gram[:, dim, :dim] = weighted.sum(dim=1)
    gram[:, dim, dim] = weights.sum(dim=-1)
    rhs = features.new_empty(n_states, dim + 1, response.shape[-1])
    if n_classes is not None and len(targets) == 1:
        # Shared classes: F^T W Y sums the weighted features of each class.
        by_class = weighted.new_zeros(n_states, n_classes, dim)
        by_class.index_add_(1, targets[0].long(), weighted)
        rhs[:, :dim] = by_class.transpose(1, 2)
    else:
        rhs[:, :dim] = weighted.transpose(1, 2) @ response
    rhs[:, dim] = (weights[:, None, :] @ response)[:, 0]
    solution = _solve_heads(gram, rhs, ridge)
    head, bias = solution[:, :dim], solution[:, dim:]  # (S, dim, out), (S, 1, out)

    if kind == "error":
        fitted = torch.baddbmm(bias, features, head)
        wrong = (fitted.argmax(dim=-1) != targets.long()).to(torch.float64)
        return (weights * wrong).sum(dim=-1)
    residual = (bias - response).baddbmm_(features, head)  # (S, atoms, out)
    return (weights[:, None, :] @ residual.square_()).sum(dim=(1, 2))


def _solve_heads(gram: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve (S, k, k) ridge systems: Cholesky where certified, else SVD lstsq."""
    solution = torch.empty_like(rhs)
    fallback = torch.ones(len(gram), dtype=torch.bool, device=gram.device)
    if ridge > 0:
        # The bound of `terminal_costs` on the condition number, from the gram.
        total = gram[:, -1, -1]
        mean = gram[:, :-1, -1] / total[:, None]
        lowest = ridge * total / (total * (1 + mean.square().sum(dim=-1)) + ridge)
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
        fallback = ~(trace < MAX_CONDITION * lowest)  # also catches NaN
        if not bool(fallback.all()):
            good = ~fallback
            factor, info = torch.linalg.cholesky_ex(gram[good])
            solved = torch.cholesky_solve(rhs[good], factor)
            solution[good] = solved
            # A factorisation that failed anyway goes to the fallback too.
            failed = good.clone()
            failed[good] = (info != 0) | ~torch.isfinite(solved).flatten(1).all(1)
            fallback |= failed

    if bool(fallback.any()):
        # gelsd runs on the CPU only.
        solution[fallback] = torch.linalg.lstsq(
            gram[fallback].cpu(), rhs[fallback].cpu(), driver="gelsd"
        ).solution.to(gram.device)
    return solution
