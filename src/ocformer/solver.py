"""Exact solvers of the quantized lifted MDP: forward-reachable DP and brute force.

Dynamic programming (DESIGN.md section 4):

- forward pass: from Lambda_0, expand every state of the frontier by every action (in
  chunks of states, all actions at once), quantize, and deduplicate by the canonical
  key, so that action histories reaching the same quantized measure share one subtree.
  With a measure radius ``epsilon > 0`` a new state within W1 distance epsilon of a
  kept state of its layer is represented by that state (``frontier.MeasureNet``).
  The last layer's states are never stored: only their terminal cost, once per key.
- backward pass: ``V_T = C_T`` and ``V_t(s) = min_a c(a) + V_{t+1}(child(s, a))``, ties
  to the lowest action index.
- the plan rolls the greedy policy forward from Lambda_0; at every layer it takes the
  lowest optimal action, so the plan is reproducible.

Brute force is the oracle: it rolls every one of the ``L^T`` plans out independently, in
lexicographic order, and keeps the first with the least cost. Both find the same
value; their plans can differ only between plans whose costs tie once rounded.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ocformer.errors import ConfigError
from ocformer.frontier import MeasureNet
from ocformer.mdp import QuantizedProblem

logger = logging.getLogger(__name__)

METHODS = ("dp", "brute")
# Brute force refuses more plans than this: it would run for hours.
MAX_BRUTE_PLANS = 1_000_000

Progress = Callable[[int, int, int], None]
"""Called as ``progress(layer, done, total)`` while a layer is being expanded."""

Expansion = tuple[np.ndarray, list[bytes]]
Mapper = Callable[[QuantizedProblem, Iterable[np.ndarray]], Iterator[Expansion]]
"""Maps ``expand_chunk`` over chunks of states, yielding results in chunk order."""


@dataclass(frozen=True)
class Solution:
    """An optimal plan of the quantized model and what it cost to find.

    Attributes:
        method: ``"dp"`` or ``"brute"``.
        plan: action index of each layer, length n_layers.
        value: optimal cost ``sum_t c(a_t) + C_T`` of the quantized model.
        states_per_layer: distinct quantized states kept at layers 0..T (brute
            force: the plan prefixes, ``L^t``).
        states_expanded: states whose successors were computed.
        transitions: (state, action) pairs evaluated, one layer each.
        terminal_evaluations: terminal costs computed.
        represented: distinct new states (by key) that the measure epsilon-net
            mapped to a kept state instead of keeping them (0 without a radius).
    """

    method: str
    plan: tuple[int, ...]
    value: float
    states_per_layer: tuple[int, ...]
    states_expanded: int
    transitions: int
    terminal_evaluations: int
    represented: int = 0


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


def solve(
    problem: QuantizedProblem,
    method: str = "dp",
    progress: Progress | None = None,
    *,
    measure_radius: float = 0.0,
    mapper: Mapper = serial_map,
) -> Solution:
    """Solve the quantized MDP exactly with ``method`` (``"dp"`` or ``"brute"``).

    Args:
        problem: the MDP.
        method: ``"dp"`` or ``"brute"``.
        progress: called as ``progress(layer, done, total)``.
        measure_radius: epsilon of the measure net (dp only); 0 merges exactly
            equal measures only.
        mapper: how chunks of states are expanded (serially by default).
    """
    if not measure_radius >= 0:
        raise ConfigError(
            f"`measure_radius` must be >= 0, got {measure_radius}; 0 merges only "
            "identical measures."
        )
    if method == "dp":
        return solve_dp(problem, progress, measure_radius=measure_radius, mapper=mapper)
    if method == "brute":
        if measure_radius > 0:
            raise ConfigError(
                "`measure_radius` applies to dp only; brute force rolls out every "
                "plan of the quantized model. Drop --measure-radius or use --method dp."
            )
        return solve_brute(problem, progress)
    raise ConfigError(
        f"`method` must be one of {', '.join(METHODS)}, got {method!r}; use dp "
        "(dynamic programming) or brute (every plan, the oracle)."
    )


def solve_dp(
    problem: QuantizedProblem,
    progress: Progress | None = None,
    *,
    measure_radius: float = 0.0,
    mapper: Mapper = serial_map,
) -> Solution:
    """Forward-reachable dynamic programming over canonical quantized measures."""
    horizon, n_actions = problem.n_layers, problem.n_actions
    initial = problem.initial.codes
    if horizon == 0:
        return Solution("dp", (), problem.terminal_cost(initial), (1,), 0, 0, 1)

    # Forward pass. tables[t][s, a] indexes layer t + 1; frontier holds layer t.
    frontier = initial[None]  # (1, atoms, n_tokens)
    tables: list[np.ndarray] = []
    states_per_layer = [1]
    terminal_values: list[float] = []
    represented = 0
    for layer in range(horizon):
        last = layer == horizon - 1
        net = _measure_net(problem, measure_radius)
        index: dict[bytes, int] = {}
        kept: list[np.ndarray] = []
        count = 0
        table = np.empty((len(frontier), n_actions), dtype=np.int64)

        size = problem.chunk_size(n_actions)
        chunks = (frontier[i : i + size] for i in range(0, len(frontier), size))
        row = 0
        for children, keys in mapper(problem, chunks):
            for child, key in zip(
                children.reshape(-1, *initial.shape), keys, strict=True
            ):
                slot = index.get(key)
                if slot is None and net is not None:
                    found = net.find(child)
                    if found is not None:
                        slot = index[key] = found[0]
                        represented += 1
                if slot is None:
                    slot = index[key] = count
                    count += 1
                    if net is not None:
                        net.add(child.copy())
                    if last:
                        terminal_values.append(problem.terminal_cost(child))
                    else:
                        kept.append(child.copy())
                table.flat[row] = slot
                row += 1
            if progress is not None:
                progress(layer, row // n_actions, len(frontier))

        logger.info("layer %d: %d states -> %d", layer, len(frontier), count)
        tables.append(table)
        states_per_layer.append(count)
        frontier = np.stack(kept) if kept else frontier[:0]

    plan, value = _backward(tables, np.asarray(terminal_values), problem)
    expanded = sum(states_per_layer[:-1])
    return Solution(
        method="dp",
        plan=plan,
        value=value,
        states_per_layer=tuple(states_per_layer),
        states_expanded=expanded,
        transitions=expanded * n_actions,
        terminal_evaluations=states_per_layer[-1],
        represented=represented,
    )


def _measure_net(problem: QuantizedProblem, radius: float) -> MeasureNet | None:
    """A fresh epsilon-net for one layer, or None for exact merging only."""
    if radius == 0:
        return None
    lengths = problem.mask.sum(axis=1)
    weights = problem.initial.weights
    return MeasureNet(problem.codebook.codewords, weights, lengths, radius)


def _backward(tables, terminal_values, problem) -> tuple[tuple[int, ...], float]:
    """Bellman minimisation and plan extraction; argmin returns the lowest action."""
    running = problem.running_costs()
    values = terminal_values
    policies: list[np.ndarray] = []
    for table in reversed(tables):
        q_values = running[None, :] + values[table]  # (states, actions)
        policy = q_values.argmin(axis=1)
        values = q_values[np.arange(len(table)), policy]
        policies.append(policy)
    policies.reverse()

    plan, state = [], 0
    for policy, table in zip(policies, tables, strict=True):
        action = int(policy[state])
        plan.append(action)
        state = int(table[state, action])
    return tuple(plan), float(values[0])


def solve_brute(
    problem: QuantizedProblem, progress: Progress | None = None
) -> Solution:
    """Roll out every plan independently and keep the first with the least cost."""
    horizon, n_actions = problem.n_layers, problem.n_actions
    running = problem.running_costs()
    n_plans = n_actions**horizon
    if n_plans > MAX_BRUTE_PLANS:
        raise ConfigError(
            f"brute force would roll out {n_plans} plans (more than "
            f"{MAX_BRUTE_PLANS}); use --method dp, or fewer layers or actions."
        )

    best_plan: tuple[int, ...] = ()
    best_value = np.inf
    plans = itertools.product(range(n_actions), repeat=horizon)
    block = problem.chunk_size(1)
    done = 0
    while batch := list(itertools.islice(plans, block)):
        # A block of plans moves together, each plan with its own action per layer.
        states = np.repeat(problem.initial.codes[None], len(batch), axis=0)
        for layer in range(horizon):
            states = problem.expand_paired(states, [plan[layer] for plan in batch])

        for plan, state in zip(batch, states, strict=True):
            # Accumulate from the last layer backwards, as the Bellman recursion does,
            # so that equal plans get bit-equal values.
            value = problem.terminal_cost(state)
            for action in reversed(plan):
                value = float(running[action] + value)
            if value < best_value:
                best_plan, best_value = plan, value
        done += len(batch)
        if progress is not None:
            progress(0, done, n_plans)

    return Solution(
        method="brute",
        plan=best_plan,
        value=float(best_value),
        states_per_layer=tuple(n_actions**t for t in range(horizon + 1)),
        states_expanded=horizon * n_plans,
        transitions=horizon * n_plans,
        terminal_evaluations=n_plans,
    )
