"""Exact solvers of the quantized lifted MDP: forward-reachable DP and brute force.

Dynamic programming (DESIGN.md section 4):

- forward pass (``ocformer.forward``): from Lambda_0, expand every state of the frontier
  by every action (in chunks of states, all actions at once, through a mapper: this
  process, a process pool or Ray), quantize, and deduplicate by the canonical key, so
  that action histories reaching the same quantized measure share one subtree; with a
  measure radius, an epsilon-net over each layer's measures. A
  ``checkpoint.Checkpoint`` saves every completed layer and resumes from the last.
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ocformer.errors import ConfigError
from ocformer.forward import (
    Forward,
    Mapper,
    Progress,
    expand_layer,
    measure_net,
    serial_map,
)
from ocformer.mdp import QuantizedProblem

if TYPE_CHECKING:
    from ocformer.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

METHODS = ("dp", "brute")
# Brute force refuses more plans than this: it would run for hours.
MAX_BRUTE_PLANS = 1_000_000


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


def solve(
    problem: QuantizedProblem,
    method: str = "dp",
    progress: Progress | None = None,
    *,
    measure_radius: float = 0.0,
    mapper: Mapper = serial_map,
    checkpoint: Checkpoint | None = None,
) -> Solution:
    """Solve the quantized MDP exactly with ``method`` (``"dp"`` or ``"brute"``).

    Args:
        problem: the MDP.
        method: ``"dp"`` or ``"brute"``.
        progress: called as ``progress(layer, done, total)``.
        measure_radius: epsilon of the measure net (dp only); 0 merges exactly
            equal measures only.
        mapper: how chunks of states are expanded (dp only; serially by default,
            ``parallel.open_mapper`` for a process pool or Ray).
        checkpoint: where the forward pass saves each layer and resumes from
            (dp only; ``checkpoint.Checkpoint``).
    """
    check_method(method)
    if not measure_radius >= 0:
        raise ConfigError(
            f"`measure_radius` must be >= 0, got {measure_radius}; 0 merges only "
            "identical measures."
        )
    if method == "dp":
        return solve_dp(
            problem,
            progress,
            measure_radius=measure_radius,
            mapper=mapper,
            checkpoint=checkpoint,
        )
    if method == "brute":
        if measure_radius > 0:
            raise ConfigError(
                "`measure_radius` applies to dp only; brute force rolls out every "
                "plan of the quantized model. Drop --measure-radius or use --method dp."
            )
        if checkpoint is not None:
            raise ConfigError(
                "`checkpoint` applies to dp only; brute force keeps no layers to "
                "save. Drop --checkpoint or use --method dp."
            )
        return solve_brute(problem, progress)
    raise AssertionError(f"check_method let {method!r} through")


def check_method(method: str) -> None:
    """Reject a solver that does not exist."""
    if method not in METHODS:
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
    checkpoint: Checkpoint | None = None,
) -> Solution:
    """Forward-reachable dynamic programming over canonical quantized measures.

    With a ``checkpoint`` the forward pass starts from the last layer it holds and
    saves every layer it completes, so an interrupted solve resumes where it stopped
    and returns the same solution as an uninterrupted one.
    """
    horizon, n_actions = problem.n_layers, problem.n_actions
    if horizon == 0:
        initial = problem.initial.codes
        return Solution("dp", (), problem.terminal_cost(initial), (1,), 0, 0, 1)

    forward = checkpoint.load() if checkpoint is not None else None
    if forward is None:
        forward = Forward.start(problem)
        if checkpoint is not None:
            checkpoint.save(forward)  # resumable from the start already
    elif forward.layer:
        logger.info("resuming after %d of %d layers", forward.layer, horizon)
    while forward.layer < horizon:
        layer = forward.layer
        net = measure_net(problem, measure_radius)
        step = expand_layer(problem, forward.frontier, layer, net, mapper, progress)
        logger.info(
            "layer %d: %d states -> %d", layer, len(forward.frontier), step.count
        )
        forward.advance(step)
        if checkpoint is not None:
            checkpoint.save(forward)

    plan, value = _backward(forward.tables, forward.terminal_values, problem)
    states_per_layer = forward.states_per_layer
    expanded = sum(states_per_layer[:-1])
    return Solution(
        method="dp",
        plan=plan,
        value=value,
        states_per_layer=tuple(states_per_layer),
        states_expanded=expanded,
        transitions=expanded * n_actions,
        terminal_evaluations=states_per_layer[-1],
        represented=forward.represented,
    )


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
        for plan, value in zip(batch, plan_values(problem, batch), strict=True):
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


def plan_values(
    problem: QuantizedProblem, plans: Sequence[tuple[int, ...]]
) -> list[float]:
    """The cost of each plan on the quantized model, rolled out independently.

    ``sum_t c(a_t) + C_T(Lambda_T)`` from the problem's initial measure, accumulated
    from the last layer backwards as the Bellman recursion does, so that a plan gets
    bit for bit the value the DP gives it.

    Args:
        problem: the MDP.
        plans: action indices, ``n_layers`` per plan.

    Raises:
        ConfigError: if a plan's length is not ``n_layers`` or an action is out of
            range.
    """
    for plan in plans:
        if len(plan) != problem.n_layers or not all(
            0 <= a < problem.n_actions for a in plan
        ):
            raise ConfigError(
                f"a plan must hold {problem.n_layers} action indices in "
                f"[0, {problem.n_actions}), got {list(plan)}; one action per layer."
            )
    running = problem.running_costs()
    values = []
    block = problem.chunk_size(1)
    for first in range(0, len(plans), block):
        # A block of plans moves together, each plan with its own action per layer.
        batch = plans[first : first + block]
        states = np.repeat(problem.initial.codes[None], len(batch), axis=0)
        for layer in range(problem.n_layers):
            states = problem.expand_paired(states, [plan[layer] for plan in batch])
        for plan, state in zip(batch, states, strict=True):
            value = problem.terminal_cost(state)
            for action in reversed(plan):
                value = float(running[action] + value)
            values.append(value)
    return values
