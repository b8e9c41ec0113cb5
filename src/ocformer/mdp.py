"""The quantized lifted MDP: finite states, finite actions, deterministic moves.

A state is a quantized training measure ``Lambda``: the codes of the atoms of Lambda_0,
array of shape (atoms, n_tokens), atom ``m`` keeping its target and weight from layer
to layer. An action is the index of one layer weight set of an ``actions.ActionSet``,
and one step is

    Lambda  ->  quantize( Phi(Lambda, a) )

where ``Phi`` moves every token of every atom through the layer of DESIGN.md section 1
and ``quantize`` snaps each moved token to its nearest codeword. Two states are the
same measure when their canonical keys agree (``frontier.measure_keys``). The cost of
a plan ``(a_0, ..., a_{T-1})`` is ``sum_t c(a_t) + C_T(Lambda_T)``, with the running
cost ``c(a) = action_cost * |a|^2`` on the action's weights and ``C_T`` the loss of
the best closed-form head (``cost.terminal_cost``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ocformer.actions import ActionSet
from ocformer.cost import CostKind, readout, terminal_cost
from ocformer.dynamics import layer_step
from ocformer.frontier import measure_keys
from ocformer.quantize import Measure, StateCodebook, canonical_measure

# Token coordinates one expansion may hold at once (about 64 MiB in float64).
EXPANSION_BUDGET = 8 * 2**20


@dataclass(frozen=True, kw_only=True)
class QuantizedProblem:
    """Everything that defines the finite MDP and its cost.

    Attributes:
        initial: the quantized training measure Lambda_0; its atoms, in this order,
            are the atoms of every state.
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
        device: where the transitions are computed (``"cpu"``, ``"cuda"``); the
            frontiers, keys and terminal costs stay on the CPU.
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
    device: str = "cpu"

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def mask(self) -> np.ndarray:
        """Real tokens of every atom, bool array of shape (atoms, n_tokens)."""
        return self.initial.codes != self.codebook.size

    def running_costs(self) -> np.ndarray:
        """c(a) for every action, shape (n_actions,)."""
        return self.action_cost * self.actions.norms() ** 2

    def chunk_size(self, n_actions: int) -> int:
        """How many states one call of ``expand`` should take at most."""
        per_state = (
            n_actions * self.initial.codes.size * self.codebook.codewords.shape[1]
        )
        return max(1, EXPANSION_BUDGET // max(per_state, 1))

    def expand(self, states: np.ndarray, actions=None) -> np.ndarray:
        """Quantized successors of a batch of states under several actions.

        Args:
            states: codes of shape (states, atoms, n_tokens).
            actions: indices of the actions to apply to every state; all actions,
                in order, when None.

        Returns:
            Codes of shape (states, actions, atoms, n_tokens).
        """
        weights = self.actions.weights
        if actions is not None:
            weights = weights.select(list(actions))
        moved = self._move(states[None], weights)  # (actions, states, atoms, n, dim)
        return moved.transpose(1, 0, 2, 3)

    def expand_paired(self, states: np.ndarray, actions) -> np.ndarray:
        """Successor of state ``i`` under action ``actions[i]``, for every i.

        Args:
            states: codes of shape (states, atoms, n_tokens).
            actions: one action index per state.

        Returns:
            Codes of shape (states, atoms, n_tokens).
        """
        weights = self.actions.weights.select(list(actions))
        return self._move(states[:, None], weights)[:, 0]

    def _move(self, states: np.ndarray, weights) -> np.ndarray:
        """Move and quantize: (1 or A, states, atoms, n) -> (A, states, atoms, n).

        With a leading 1 every action moves every state; with A, action ``a`` moves
        the states of ``states[a]`` only.
        """
        batch, n_states, n_atoms, n_tokens = states.shape
        device = torch.device(self.device)
        codes = torch.as_tensor(states.astype(np.int64), device=device)
        mask = torch.as_tensor(self.mask, device=device)[None].expand(n_states, -1, -1)
        mask = mask.reshape(n_states * n_atoms, n_tokens)
        tokens = self.codebook.decode(codes).reshape(
            batch, n_states * n_atoms, n_tokens, -1
        )
        moved = layer_step(
            tokens,
            mask,
            self.encodings.to(device),
            weights.to(device),
            step=self.step,
            space=self.space,
            radius=self.radius,
        )  # (actions, states * atoms, n_tokens, dim)
        new_codes = self.codebook.encode(moved, mask.expand(moved.shape[:-1]))
        new_codes = new_codes.cpu().numpy().astype(self.codebook.code_dtype)
        return new_codes.reshape(len(weights), n_states, n_atoms, n_tokens)

    def keys(self, states: np.ndarray) -> list[bytes]:
        """Canonical keys of states of shape (..., atoms, n_tokens), flattened."""
        flat = states.reshape(-1, *states.shape[-2:])
        return measure_keys(flat, self.initial.targets, self.initial.counts)

    def terminal_cost(self, state: np.ndarray) -> float:
        """C_T of a final state of shape (atoms, n_tokens).

        The cost is computed on the canonical (sorted and merged) form of the measure,
        so that it is a function of the measure alone, bit for bit, however its atoms
        are ordered.
        """
        measure = canonical_measure(state, self.initial.targets, self.initial.counts)
        return self.canonical_cost(measure.codes, measure.targets, measure.counts)

    def canonical_cost(
        self, codes: np.ndarray, targets: np.ndarray, counts: np.ndarray
    ) -> float:
        """C_T of a measure already in canonical form (sorted, distinct atoms).

        Args:
            codes: unsigned integer array of shape (atoms, n_tokens).
            targets: array of shape (atoms,).
            counts: int64 array of shape (atoms,), the weight numerators.
        """
        codes = torch.as_tensor(codes.astype(np.int64))
        mask = codes != self.codebook.size
        features = readout(self.codebook.decode(codes), mask)
        return terminal_cost(
            features,
            targets,
            counts / counts.sum(),
            kind=self.cost,
            n_classes=self.n_classes,
            ridge=self.ridge,
        )
