"""Tests of ocformer.baselines: Adam, straight-through, CMA-ES, random plans."""

import dataclasses

import numpy as np
import pytest
import torch

from ocformer.actions import family_tensors, family_weights, grid_actions
from ocformer.baselines import (
    Box,
    Objective,
    fit_adam,
    fit_cma,
    nearest_actions,
    plan_value,
    random_plans,
)
from ocformer.config import ActionConfig, QuantizerConfig, TrainConfig
from ocformer.data import load_dataset, split_dataset
from ocformer.dynamics import WEIGHT_NAMES
from ocformer.errors import ConfigError
from ocformer.solver import solve, solve_brute
from ocformer.train import build_model, build_problem, evaluate
from tests.test_solver import random_problem

# Nine actions and three codewords: every fit below takes well under a second.
SMALL_GRID = {"temperature": (1.0,), "angle": (0.0,), "position": (-4.0, 0.0, 4.0)}
CONFIG = TrainConfig(
    n_layers=2,
    quantizer=QuantizerConfig(codes=3),
    actions=ActionConfig(grid=SMALL_GRID, identity=False),
)


@pytest.fixture(scope="module")
def setting():
    """A split of 60 order sequences and its quantized problem."""
    split = split_dataset(load_dataset("order", n_sequences=60), seed=0)
    return split, build_problem(split.train, CONFIG)


def test_plan_value_of_the_dp_plan_is_the_dp_value():
    """Rolling the DP's plan out gives exactly the DP's value, on random problems."""
    for seed in range(6):
        problem = random_problem(
            seed, n_layers=2, levels=3, temperatures=(0.5, 2.0), angles=(0.0, 1.0)
        )
        solution = solve(problem, "dp")
        assert plan_value(problem, solution.plan) == solution.value


def test_plan_value_is_never_below_the_optimum():
    """Every plan costs at least the brute-force minimum on the quantized model."""
    problem = random_problem(
        3, n_layers=2, levels=3, temperatures=(0.5, 2.0), angles=(0.0, 1.0)
    )
    best = solve_brute(problem).value
    values = [
        plan_value(problem, (a, b))
        for a in range(problem.n_actions)
        for b in range(problem.n_actions)
    ]
    assert min(values) == best


def test_plan_value_rejects_a_plan_of_the_wrong_length():
    """A plan must hold one valid action per layer."""
    problem = random_problem(
        0, n_layers=2, levels=3, temperatures=(1.0,), angles=(0.0,)
    )
    with pytest.raises(ConfigError, match="a plan must hold 2 action indices"):
        plan_value(problem, (0,))
    with pytest.raises(ConfigError, match=r"in \[0, "):
        plan_value(problem, (0, problem.n_actions))


def test_nearest_actions_finds_each_action_itself():
    """An action's own weights are nearest to that action."""
    actions = grid_actions(dim=2, position_dim=2)
    layers = [actions.weights.select(i) for i in (5, 0, 17)]
    assert nearest_actions(layers, actions) == (5, 0, 17)


def test_nearest_actions_is_nearest_in_the_weight_metric():
    """The chosen action minimises the Frobenius distance of the flattened weights."""
    actions = grid_actions(dim=2, position_dim=2)
    point = actions.weights.select(3)
    noisy = dataclasses.replace(point, value=point.value + 0.3)
    (chosen,) = nearest_actions([noisy], actions)
    distances = torch.linalg.vector_norm(
        actions.weights.flatten() - noisy.flatten(), dim=1
    )
    assert chosen == int(distances.argmin())


def test_family_tensors_match_family_weights_bit_for_bit():
    """The differentiable path builds the same weights as the checked one."""
    rows = np.array([[0.5, -3.0, 0.7, 0.4, 1.5], [2.0, 8.0, -1.0, 0.0, -2.0]])
    checked = family_weights(rows, dim=3, position_dim=4)
    direct = family_tensors(torch.from_numpy(rows), dim=3, position_dim=4)
    for name in WEIGHT_NAMES:
        assert torch.equal(getattr(checked, name), getattr(direct, name))


def test_objective_is_the_exported_models_training_loss(setting):
    """The differentiable objective equals the training mse of the exported model."""
    split, setup = setting
    layers = [setup.problem.actions.weights.select(a) for a in (2, 7)]
    objective = Objective(split.train, setup.embedding, CONFIG)
    model = build_model(split.train, setup.embedding, layers, CONFIG, None)
    expected = evaluate(model, split.train, "mse")["loss"]
    assert float(objective(layers)) == pytest.approx(expected, rel=1e-10)


def test_adam_lowers_the_training_cost_and_is_reproducible(setting):
    """Adam ends below its starting cost; the same seed gives the same weights."""
    split, setup = setting
    first = fit_adam(split.train, setup.embedding, CONFIG, seed=1, steps=30)
    again = fit_adam(split.train, setup.embedding, CONFIG, seed=1, steps=30)
    start = fit_adam(
        split.train, setup.embedding, CONFIG, seed=1, steps=1, learning_rate=1e-12
    )
    assert first.train_cost < start.train_cost
    assert first.evaluations == 31 * CONFIG.n_layers
    for one, two in zip(first.layers, again.layers, strict=True):
        for name in WEIGHT_NAMES:
            assert torch.equal(getattr(one, name), getattr(two, name))
    other = fit_adam(split.train, setup.embedding, CONFIG, seed=2, steps=30)
    assert not torch.equal(first.layers[0].value, other.layers[0].value)


def test_adam_in_the_family_stays_in_the_box(setting):
    """A family fit's parameters lie in the grid's box and define its layers."""
    split, setup = setting
    fit = fit_adam(
        split.train, setup.embedding, CONFIG, seed=0, steps=20, space="family"
    )
    box = Box.of(CONFIG)
    assert fit.parameters.shape == (2, 5)
    assert (fit.parameters >= box.lows).all() and (fit.parameters <= box.highs).all()
    rebuilt = family_weights(fit.parameters, dim=setup.embedding.dim, position_dim=2)
    assert torch.allclose(rebuilt.value, torch.cat([f.value for f in fit.layers]))


def test_straight_through_ends_next_to_a_finite_plan(setting):
    """Training through the nearest action yields a plan of the finite set whose
    true cost is the fit's forward cost at its last step."""
    split, setup = setting
    actions = setup.problem.actions
    fit = fit_adam(
        split.train, setup.embedding, CONFIG, seed=0, steps=20, actions=actions
    )
    plan = nearest_actions(fit.layers, actions)
    assert len(plan) == 2 and all(0 <= a < len(actions) for a in plan)
    assert plan_value(setup.problem, plan) >= solve(setup.problem).value


def test_adam_rejects_bad_options(setting):
    """Unknown spaces, no steps and a family fit through actions are refused."""
    split, setup = setting
    train, embedding = split.train, setup.embedding
    with pytest.raises(ConfigError, match="`space` must be one of"):
        fit_adam(train, embedding, CONFIG, seed=0, space="bits")
    with pytest.raises(ConfigError, match="`steps` must be >= 1"):
        fit_adam(train, embedding, CONFIG, seed=0, steps=0)
    with pytest.raises(ConfigError, match="`learning_rate` must be a positive"):
        fit_adam(train, embedding, CONFIG, seed=0, learning_rate=float("nan"))
    with pytest.raises(ConfigError, match="works in the weight space"):
        fit_adam(
            train,
            embedding,
            CONFIG,
            seed=0,
            space="family",
            actions=setup.problem.actions,
        )


def test_cma_is_seeded_even_with_seed_zero(setting):
    """CMA-ES with seed 0 (the clock, to cma itself) repeats bit for bit."""
    split, setup = setting
    runs = [
        fit_cma(split.train, setup.embedding, CONFIG, seed=0, evaluations=40)
        for _ in range(2)
    ]
    assert np.array_equal(runs[0].parameters, runs[1].parameters)
    assert runs[0].train_cost == runs[1].train_cost
    box = Box.of(CONFIG)
    assert (runs[0].parameters >= box.lows).all()
    assert (runs[0].parameters <= box.highs).all()


def test_cma_needs_the_grid_family(setting):
    """Searching family parameters is refused for another action family."""
    split, setup = setting
    ternary = dataclasses.replace(CONFIG, actions=ActionConfig(family="ternary"))
    with pytest.raises(ConfigError, match="needs the grid family"):
        fit_cma(split.train, setup.embedding, ternary, seed=0)


def test_random_plans_keep_the_best_draw(setting):
    """Random search returns the cheapest of its draws, never below the optimum."""
    _, setup = setting
    problem = setup.problem
    search = random_plans(problem, n_plans=12, seed=4)
    again = random_plans(problem, n_plans=12, seed=4)
    assert search == dataclasses.replace(again, seconds=search.seconds)
    assert search.value == plan_value(problem, search.plan)
    assert search.value >= solve(problem).value
    assert search.evaluations == 12 * problem.n_layers
    with pytest.raises(ConfigError, match="`n_plans` must be >= 1"):
        random_plans(problem, n_plans=0, seed=0)
