"""The forward pass of the DP: expand a layer, deduplicate it, keep what it reached.

From Lambda_0, every state of a layer is expanded by every action and quantized; the
children are deduplicated by their canonical key (``frontier.measure_keys``), so that
action histories reaching the same quantized measure share one subtree. With a measure
radius ``epsilon > 0`` a new state within W1 distance epsilon of a kept state of its
layer is represented by that state (``frontier.MeasureNet``). The last layer's states
are never stored: only their terminal cost, once per key.

States are expanded in chunks through a *mapper*: ``serial_map`` here, or a process
pool or Ray (``ocformer.parallel``). Chunk boundaries depend on the problem alone and
deduplication stays in the calling process, which sees the children in (state, action)
order whatever ran them, so every mapper gives the same layers, bit for bit.
``Forward`` is the pass so far: what ``checkpoint.Checkpoint`` saves and restores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ocformer.frontier import MeasureNet
from ocformer.mdp import QuantizedProblem

Progress = Callable[[int, int, int], None]
"""Called as ``progress(layer, done, total)`` while a layer is being expanded."""

Expansion = tuple[np.ndarray, list[bytes]]
Mapper = Callable[[QuantizedProblem, Iterable[np.ndarray]], Iterator[Expansion]]
"""Maps ``expand_chunk`` over chunks of states, yielding results in chunk order."""


def expand_chunk(problem: QuantizedProblem, states: np.ndarray) -> Expansion:
    """Successors of a chunk of states under every action, and their keys.

    Args:
        problem: the MDP.
        states: codes of shape (states, atoms, n_tokens).

    Returns:
        Codes of shape (states, actions, atoms, n_tokens) and one key per successor,
        in (state, action) order.
    """
    children = problem.expand(states)
    return children, problem.keys(children)


def serial_map(problem: QuantizedProblem, chunks: Iterable[np.ndarray]):
    """Expand chunks one after the other in this process."""
    for chunk in chunks:
        yield expand_chunk(problem, chunk)


@dataclass(frozen=True)
class LayerExpansion:
    """One layer of the forward pass.

    Attributes:
        table: int64 array of shape (states, actions); ``table[s, a]`` is the index
            at the next layer of the successor of state ``s`` under action ``a``.
        count: distinct states of the next layer.
        frontier: codes of the next layer's states, shape (count, atoms, n_tokens),
            or None after the last layer.
        terminal_values: float64 array of shape (count,), C_T of each final state,
            after the last layer only.
        represented: new states the epsilon-net mapped to a kept state.
    """

    table: np.ndarray
    count: int
    frontier: np.ndarray | None
    terminal_values: np.ndarray | None
    represented: int


@dataclass
class Forward:
    """The forward pass so far: what a checkpoint saves and a resume restores.

    Attributes:
        tables: one children table per completed layer, shape (states, actions);
            ``tables[t]`` indexes the states of layer ``t + 1``.
        states_per_layer: distinct states at layers 0..``layer``.
        represented: states mapped to a kept state by the epsilon-net, so far.
        frontier: codes of the states of layer ``layer``, shape
            (states, atoms, n_tokens); empty once the last layer is done.
        terminal_values: C_T of each final state, once the last layer is done.
    """

    tables: list[np.ndarray]
    states_per_layer: list[int]
    represented: int
    frontier: np.ndarray
    terminal_values: np.ndarray | None = None

    @classmethod
    def start(cls, problem: QuantizedProblem) -> Forward:
        """Before the first layer: Lambda_0 alone."""
        return cls([], [1], 0, problem.initial.codes[None])

    @property
    def layer(self) -> int:
        """The layer whose states ``frontier`` holds: completed layers so far."""
        return len(self.tables)

    def advance(self, step: LayerExpansion) -> None:
        """Append one expanded layer."""
        self.tables.append(step.table)
        self.states_per_layer.append(step.count)
        self.represented += step.represented
        if step.frontier is None:
            self.frontier = self.frontier[:0]
            self.terminal_values = step.terminal_values
        else:
            self.frontier = step.frontier


def expand_layer(
    problem: QuantizedProblem,
    frontier: np.ndarray,
    layer: int,
    net: MeasureNet | None,
    mapper: Mapper = serial_map,
    progress: Progress | None = None,
) -> LayerExpansion:
    """Expand every state of a layer by every action, and deduplicate the children.

    Children are offered in (state, action) order, whatever runs the chunks: each
    new key is kept, or, with an epsilon-net, represented by the nearest kept state
    within epsilon. Only the last layer's children are costed instead of kept.

    Args:
        problem: the MDP.
        frontier: codes of the layer's states, shape (states, atoms, n_tokens).
        layer: the layer's index, from 0.
        net: a fresh epsilon-net for the next layer, or None for exact merging.
        mapper: how chunks of states are expanded.
        progress: called as ``progress(layer, done, total)`` after each chunk.
    """
    n_actions, shape = problem.n_actions, problem.initial.codes.shape
    last = layer == problem.n_layers - 1
    index: dict[bytes, int] = {}
    kept: list[np.ndarray] = []  # codes of the new states, one array per chunk
    terminal_values: list[float] = []
    table = np.empty((len(frontier), n_actions), dtype=np.int64)
    count = represented = row = 0

    # Chunk boundaries depend on the problem alone, never on the mapper, so that
    # every mapper feeds the dynamics the same batches.
    size = problem.chunk_size(n_actions)
    chunks = (frontier[i : i + size] for i in range(0, len(frontier), size))
    for children, keys in mapper(problem, chunks):
        children = children.reshape(-1, *shape)  # (states * actions, atoms, n)
        assert len(keys) == len(children), "a mapper returned keys out of step"
        new: list[int] = []
        for position, key in enumerate(keys):
            slot = index.get(key)
            if slot is None and net is not None:
                found = net.find(children[position])
                if found is not None:
                    slot = index[key] = found[0]
                    represented += 1
            if slot is None:
                slot = index[key] = count
                count += 1
                new.append(position)
                if net is not None:
                    net.add(children[position].copy())
                if last:
                    terminal_values.append(problem.terminal_cost(children[position]))
            table.flat[row] = slot
            row += 1
        if new and not last:
            kept.append(children[new])  # a copy: the chunk itself is released
        if progress is not None:
            progress(layer, row // n_actions, len(frontier))

    if last:
        return LayerExpansion(
            table, count, None, np.asarray(terminal_values, np.float64), represented
        )
    frontier = np.concatenate(kept) if kept else frontier[:0]
    return LayerExpansion(table, count, frontier, None, represented)


def measure_net(problem: QuantizedProblem, radius: float) -> MeasureNet | None:
    """A fresh epsilon-net for one layer, or None for exact merging only."""
    if radius == 0:
        return None
    lengths = problem.mask.sum(axis=1)
    weights = problem.initial.weights
    return MeasureNet(problem.codebook.codewords, weights, lengths, radius)
