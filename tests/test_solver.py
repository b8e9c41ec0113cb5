"""Exact solvers: dynamic programming against the brute-force oracle."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ocformer.actions import grid_actions
from ocformer.embedding import positional_encoding
from ocformer.errors import ConfigError
from ocformer.mdp import QuantizedProblem
from ocformer.quantize import canonical_measure, uniform_codebook
from ocformer.solver import solve

DIM, POSITION_DIM, N_TOKENS = 2, 2, 3


def random_problem(
    seed,
    *,
    n_layers,
    levels,
    temperatures,
    angles,
    cost="mse",
    action_cost=0.0,
    atoms=8,
):
    """A small quantized MDP drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    book = uniform_codebook(dim=DIM, levels=levels)
    codes = rng.integers(0, book.size, size=(atoms, N_TOKENS)).astype(np.uint8)
    targets = rng.permutation(np.arange(atoms) % 2)
    initial = canonical_measure(codes, targets, np.ones(atoms, dtype=np.int64))
    actions = grid_actions(
        dim=DIM,
        position_dim=POSITION_DIM,
        grid={
            "temperature": temperatures,
            "angle": angles,
            "position": (1.0,),
            "mlp_gain": (0.5,),
        },
    )
    return QuantizedProblem(
        initial=initial,
        codebook=book,
        actions=actions,
        encodings=torch.as_tensor(positional_encoding(N_TOKENS, POSITION_DIM)),
        n_layers=n_layers,
        step=0.7,
        space="ball",
        radius=1.0,
        cost=cost,
        n_classes=2,
        ridge=1e-3,
        action_cost=action_cost,
    )


def rollout_value(problem, plan):
    """Cost of ``plan`` in the quantized model, accumulated as brute force does."""
    state = problem.initial.codes[None]
    for action in plan:
        state = problem.expand_paired(state, [action])
    value = problem.terminal_cost(state[0])
    for action in reversed(plan):
        value = float(problem.running_costs()[action] + value)
    return value


@given(
    seed=st.integers(0, 10_000),
    n_layers=st.integers(1, 3),
    levels=st.integers(2, 4),
    temperatures=st.lists(st.floats(0.0, 4.0), min_size=1, max_size=2, unique=True),
    angles=st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=2, unique=True),
    cost=st.sampled_from(["mse", "error"]),
    action_cost=st.sampled_from([0.0, 0.01]),
)
@settings(max_examples=40, deadline=None)
def test_dp_equals_brute_force(
    seed, n_layers, levels, temperatures, angles, cost, action_cost
):
    """DP's value equals the brute-force optimum, and its plan attains it."""
    problem = random_problem(
        seed,
        n_layers=n_layers,
        levels=levels,
        temperatures=tuple(temperatures),
        angles=tuple(angles),
        cost=cost,
        action_cost=action_cost,
    )
    dp = solve(problem, "dp")
    brute = solve(problem, "brute")
    assert dp.value == brute.value
    assert dp.transitions <= brute.transitions
    # Plans may differ only where two plans tie once rounded; DP's must be optimal.
    assert rollout_value(problem, dp.plan) == brute.value


def test_dp_plan_rolls_out_to_its_value():
    """Rolling the plan through the quantized model reproduces the DP value."""
    problem = random_problem(
        3,
        n_layers=3,
        levels=3,
        temperatures=(0.5, 3.0),
        angles=(0.0, 1.0),
        action_cost=0.01,
    )
    solution = solve(problem, "dp")
    assert rollout_value(problem, solution.plan) == solution.value


def test_coarse_codebook_merges_states():
    """With two levels per axis, different histories reach the same measure."""
    problem = random_problem(
        1, n_layers=3, levels=2, temperatures=(0.5, 1.0, 2.0), angles=(0.0, 0.1)
    )
    solution = solve(problem, "dp")
    n_actions = len(problem.actions)
    assert solution.states_per_layer[2] < n_actions**2
    assert solution.transitions < 3 * n_actions**3


def test_zero_layers_is_the_terminal_cost_of_the_data():
    """With no layers the value is the readout's cost on the initial measure."""
    problem = random_problem(
        0, n_layers=0, levels=3, temperatures=(1.0,), angles=(0.0,)
    )
    solution = solve(problem, "dp")
    assert solution.plan == ()
    assert solution.value == problem.terminal_cost(problem.initial.codes)


def test_unknown_method_is_rejected():
    """An unknown solver name lists the valid ones."""
    problem = random_problem(
        0, n_layers=1, levels=2, temperatures=(1.0,), angles=(0.0,)
    )
    with pytest.raises(
        ConfigError, match="`method` must be one of dp, brute, got 'bfs'"
    ):
        solve(problem, "bfs")
