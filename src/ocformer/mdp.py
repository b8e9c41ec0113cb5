"""The quantized lifted MDP: finite states, finite actions, deterministic moves.

A state is a quantized training measure ``Lambda`` (a ``quantize.Measure``), an
action is the index of one layer weight set of an ``actions.ActionSet``, and one step
is

    Lambda  ->  quantize( Phi(Lambda, a) )

where ``Phi`` moves every token of every atom through the layer of DESIGN.md section 1
and ``quantize`` snaps each moved token to its nearest codeword and merges equal atoms.
The cost of a plan ``(a_0, ..., a_{T-1})`` is ``sum_t c(a_t) + C_T(Lambda_T)``, with the
running cost ``c(a) = action_cost * |a|^2`` on the action's weights and ``C_T`` the loss
of the best closed-form head (:func:`ocformer.cost.terminal_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ocformer.actions import ActionSet
from ocformer.cost import CostKind, readout, terminal_cost
from ocformer.dynamics import layer_step
from ocformer.quantize import Measure, StateCodebook, canonical_measure


@dataclass(frozen=True, kw_only=True)
class QuantizedProblem:
    """Everything that defines the finite MDP and its cost.

    Attributes:
        initial: the quantized training measure Lambda_0.
        codebook: the state codebook (token quantizer).
        actions: the finite action set, L layer weight sets.
        encodings: float64 tensor of shape (n_tokens, position_dim), e_p.
        n_layers: horizon T, >= 0.
        step: step size h of the layer update.
        space: ``"ball"`` or ``"sphere"``, the token set X.
        radius: R, the radius of X.
        cost: terminal loss, ``"mse"`` or ``"error"``.
        n_classes: number of classes, or None for regression.
        ridge: ridge penalty of the closed-form head.
        action_cost: weight of the running cost ``|a|^2``, >= 0.
    """

    initial: Measure
    codebook: StateCodebook
    actions: ActionSet
    encodings: torch.Tensor
    n_layers: int
    step: float
    space: str
    radius: float
    cost: CostKind
    n_classes: int | None
    ridge: float
    action_cost: float = 0.0

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    def running_costs(self) -> np.ndarray:
        """c(a) for every action, shape (n_actions,)."""
        return self.action_cost * self.actions.norms() ** 2

    def successors(self, measure: Measure, actions=None) -> list[Measure]:
        """Quantized successors of one state under several actions.

        Args:
            measure: the current state.
            actions: indices of the actions to apply (a sequence of ints); all
                actions, in order, when None.

        Returns:
            One canonical measure per requested action, in the same order.
        """
        weights = self.actions.weights
        if actions is not None:
            weights = weights.select(list(actions))

        codes = torch.as_tensor(measure.codes.astype(np.int64))
        mask = codes != self.codebook.size
        tokens = self.codebook.decode(codes)[None]  # (1, atoms, n_tokens, dim)
        moved = layer_step(
            tokens,
            mask,
            self.encodings,
            weights,
            step=self.step,
            space=self.space,
            radius=self.radius,
        )  # (actions, atoms, n_tokens, dim)
        new_codes = self.codebook.encode(moved, mask.expand(moved.shape[:-1]))
        new_codes = new_codes.numpy().astype(self.codebook.code_dtype)

        return [
            canonical_measure(codes_a, measure.targets, measure.counts)
            for codes_a in new_codes
        ]

    def terminal_cost(self, measure: Measure) -> float:
        """C_T of a final state: the loss of the best head on its pooled tokens."""
        codes = torch.as_tensor(measure.codes.astype(np.int64))
        mask = codes != self.codebook.size
        features = readout(self.codebook.decode(codes), mask)
        return terminal_cost(
            features,
            measure.targets,
            measure.weights,
            kind=self.cost,
            n_classes=self.n_classes,
            ridge=self.ridge,
        )
