"""Exact solvers of the quantized lifted MDP: forward-reachable DP and brute force.

Dynamic programming (DESIGN.md section 4):

- forward pass: from Lambda_0, expand every state of the frontier by every action,
  quantize, and deduplicate by the canonical key, so that action histories reaching the
  same quantized measure share one subtree. The last layer's states are never stored:
  only their terminal cost, once per distinct key.
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ocformer.errors import ConfigError
from ocformer.mdp import QuantizedProblem
from ocformer.quantize import Measure

logger = logging.getLogger(__name__)

METHODS = ("dp", "brute")
# Brute force refuses more plans than this: it would run for hours.
MAX_BRUTE_PLANS = 1_000_000

Progress = Callable[[int, int, int], None]
"""Called as ``progress(layer, done, total)`` while a layer is being expanded."""


@dataclass(frozen=True)
class Solution:
    """An optimal plan of the quantized model and what it cost to find.

    Attributes:
        method: ``"dp"`` or ``"brute"``.
        plan: action index of each layer, length n_layers.
        value: optimal cost ``sum_t c(a_t) + C_T`` of the quantized model.
        states_per_layer: distinct quantized states reached at layers 0..T (brute
            force counts states along its rollouts, without deduplication).
        states_expanded: states whose successors were computed.
        transitions: (state, action) pairs evaluated, one layer each.
        terminal_evaluations: terminal costs computed.
    """

    method: str
    plan: tuple[int, ...]
    value: float
    states_per_layer: tuple[int, ...]
    states_expanded: int
    transitions: int
    terminal_evaluations: int


def solve(
    problem: QuantizedProblem, method: str = "dp", progress: Progress | None = None
) -> Solution:
    """Solve the quantized MDP exactly with ``method`` (``"dp"`` or ``"brute"``)."""
    if method == "dp":
        return solve_dp(problem, progress)
    if method == "brute":
        return solve_brute(problem, progress)
    raise ConfigError(
        f"`method` must be one of {', '.join(METHODS)}, got {method!r}; use dp "
        "(dynamic programming) or brute (every plan, the oracle)."
    )


def solve_dp(problem: QuantizedProblem, progress: Progress | None = None) -> Solution:
    """Forward-reachable dynamic programming over canonical quantized measures."""
    horizon, running = problem.n_layers, problem.running_costs()
    if horizon == 0:
        value = problem.terminal_cost(problem.initial)
        return Solution("dp", (), value, (1,), 0, 0, 1)

    # Forward pass. children[t][s, a] indexes layer t + 1; frontier holds layer t.
    frontier: list[Measure] = [problem.initial]
    children: list[np.ndarray] = []
    states_per_layer = [1]
    terminal_values: list[float] = []
    for layer in range(horizon):
        last = layer == horizon - 1
        index: dict[bytes, int] = {}
        next_frontier: list[Measure] = []
        table = np.empty((len(frontier), problem.n_actions), dtype=np.int64)

        for row, state in enumerate(frontier):
            for action, child in enumerate(problem.successors(state)):
                slot = index.get(child.key)
                if slot is None:
                    slot = index[child.key] = len(index)
                    if last:
                        terminal_values.append(problem.terminal_cost(child))
                    else:
                        next_frontier.append(child)
                table[row, action] = slot
            if progress is not None:
                progress(layer, row + 1, len(frontier))

        logger.info("layer %d: %d states -> %d", layer, len(frontier), len(index))
        children.append(table)
        states_per_layer.append(len(index))
        frontier = next_frontier

    # Backward pass: Bellman minimisation; argmin returns the lowest optimal action.
    values = np.asarray(terminal_values)
    policies: list[np.ndarray] = []
    for table in reversed(children):
        q_values = running[None, :] + values[table]  # (states, actions)
        policy = q_values.argmin(axis=1)
        values = q_values[np.arange(len(table)), policy]
        policies.append(policy)
    policies.reverse()

    plan, state = [], 0
    for policy, table in zip(policies, children, strict=True):
        action = int(policy[state])
        plan.append(action)
        state = int(table[state, action])

    expanded = sum(states_per_layer[:-1])
    return Solution(
        method="dp",
        plan=tuple(plan),
        value=float(values[0]),
        states_per_layer=tuple(states_per_layer),
        states_expanded=expanded,
        transitions=expanded * problem.n_actions,
        terminal_evaluations=states_per_layer[-1],
    )


def solve_brute(
    problem: QuantizedProblem, progress: Progress | None = None
) -> Solution:
    """Roll out every plan independently and keep the first with the least cost."""
    horizon, running = problem.n_layers, problem.running_costs()
    n_plans = problem.n_actions**horizon
    if n_plans > MAX_BRUTE_PLANS:
        raise ConfigError(
            f"brute force would roll out {n_plans} plans (more than "
            f"{MAX_BRUTE_PLANS}); use --method dp, or fewer layers or actions."
        )

    best_plan: tuple[int, ...] = ()
    best_value = np.inf
    for done, plan in enumerate(
        itertools.product(range(problem.n_actions), repeat=horizon)
    ):
        state = problem.initial
        for action in plan:
            (state,) = problem.successors(state, [action])

        # Accumulate from the last layer backwards, as the Bellman recursion does,
        # so that equal plans get bit-equal values.
        value = problem.terminal_cost(state)
        for action in reversed(plan):
            value = float(running[action] + value)
        if value < best_value:
            best_plan, best_value = plan, value
        if progress is not None:
            progress(0, done + 1, n_plans)

    return Solution(
        method="brute",
        plan=best_plan,
        value=float(best_value),
        states_per_layer=(1, *(problem.n_actions**t for t in range(1, horizon + 1))),
        states_expanded=horizon * n_plans,
        transitions=horizon * n_plans,
        terminal_evaluations=n_plans,
    )
