"""Claim 1: optimal policies exist and dynamic programming finds one.

On many small random instances of the quantized MDP (random sequences, 1 to 3 layers,
a few actions, both terminal costs, with and without a running cost), the value of
the forward-reachable DP (``solver.solve_dp``) must equal the minimum over every plan
that brute force rolls out (``solver.solve_brute``), to the last bit. Both accumulate
``c(a_t) + ... + C_T`` from the last layer backwards, so an exact DP leaves no
rounding difference to excuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ocformer.actions import DEFAULT_GRID, PARAMETERS
from ocformer.config import ActionConfig, QuantizerConfig, TrainConfig
from ocformer.data import load_dataset, split_dataset
from ocformer.embedding import EmbeddingConfig
from ocformer.solver import solve
from ocformer.train import build_problem
from ocformer.verify.claim import ClaimResult, Settings

NUMBER = 1
CRITERION = (
    "Every instance: the DP value equals the brute-force minimum exactly "
    "(float64 ==, so the largest |difference| is 0.0)."
)
# The most grid parameters varied (2 values each) per horizon, so that brute force
# rolls out at most (2^k + 1)^T plans: 17, 81 and 25 (with the identity layer).
VARIED = {1: 4, 2: 3, 3: 2}


@dataclass(frozen=True)
class Sizes:
    """How many instances, and how large their data are.

    Attributes:
        instances: random instances solved by both methods.
        sequences: (least, most) sequences drawn per instance, before the split.
    """

    instances: int
    sequences: tuple[int, int]


QUICK = Sizes(instances=24, sequences=(16, 40))
FULL = Sizes(instances=200, sequences=(16, 64))


def check(settings: Settings) -> ClaimResult:
    """Solve random instances by DP and by brute force and compare the values."""
    sizes = QUICK if settings.quick else FULL
    rng = settings.rng(NUMBER)
    rows = []
    for index in range(sizes.instances):
        problem, description = random_instance(settings.data, rng, index, sizes)
        dp = solve(problem, "dp")
        brute = solve(problem, "brute")
        rows.append(
            {
                **description,
                "dp_value": dp.value,
                "brute_value": brute.value,
                "difference": abs(dp.value - brute.value),
                "same_plan": dp.plan == brute.plan,
                "dp_transitions": dp.transitions,
                "brute_transitions": brute.transitions,
            }
        )

    equal = sum(row["dp_value"] == row["brute_value"] for row in rows)
    figures: dict[str, Any] = {
        "instances": len(rows),
        "equal_values": equal,
        "max_abs_difference": max(row["difference"] for row in rows),
        "equal_plans": sum(row["same_plan"] for row in rows),
        "dp_transitions": sum(row["dp_transitions"] for row in rows),
        "brute_transitions": sum(row["brute_transitions"] for row in rows),
        "rows": rows,
    }
    return ClaimResult(
        number=NUMBER,
        name="dp_optimal",
        title="DP is optimal",
        checked=(
            f"{len(rows)} random instances of {settings.data} sequences (1-3 layers, "
            "2-6 codewords, 2-17 actions, mse and 0-1 error, running cost 0 or "
            "0.001), each solved by forward DP and by brute force over all plans."
        ),
        criterion=CRITERION,
        passed=equal == len(rows),
        figures=figures,
        summary=(
            f"{equal}/{len(rows)} values equal, max |difference| "
            f"{figures['max_abs_difference']:.3g}; transitions DP "
            f"{figures['dp_transitions']} vs brute {figures['brute_transitions']}"
        ),
    )


def random_instance(
    data: str, rng: np.random.Generator, index: int, sizes: Sizes
) -> tuple[Any, dict[str, Any]]:
    """A random small quantized problem and the facts that describe it.

    Costs alternate between mse and the 0-1 error; the data, horizon, token
    dimension, codebook size, action grid and running cost are drawn from ``rng``.
    """
    n_layers = int(rng.integers(1, 4))
    dim = int(rng.integers(1, 4))
    codes = int(rng.integers(2, 7))
    cost = ("mse", "error")[index % 2]
    action_cost = float(rng.choice([0.0, 1e-3]))
    n_sequences = int(rng.integers(sizes.sequences[0], sizes.sequences[1] + 1))
    data_seed = int(rng.integers(2**31 - 1))

    # A sub-grid of the default grid: k parameters keep both values, the others one
    # value drawn at random. With one token feature there is no plane to rotate in.
    free = [name for name in PARAMETERS if not (dim == 1 and name == "angle")]
    n_varied = int(rng.integers(1, VARIED[n_layers] + 1))
    varied = set(rng.choice(free, size=n_varied, replace=False).tolist())
    grid = {}
    for name in PARAMETERS:
        values = DEFAULT_GRID[name]
        if dim == 1 and name == "angle":
            grid[name] = (0.0,)
        elif name in varied:
            grid[name] = tuple(values)
        else:
            grid[name] = (float(rng.choice(values)),)

    config = TrainConfig(
        n_layers=n_layers,
        cost=cost,
        action_cost=action_cost,
        seed=data_seed,
        embedding=EmbeddingConfig(dim=dim),
        quantizer=QuantizerConfig(codes=codes),
        actions=ActionConfig(grid=grid),
    )
    dataset = load_dataset(data, seed=data_seed, n_sequences=n_sequences)
    split = split_dataset(dataset, test_fraction=config.test_fraction, seed=data_seed)
    problem = build_problem(split.train, config).problem
    description = {
        "layers": n_layers,
        "actions": problem.n_actions,
        "codes": problem.codebook.size,
        "dim": dim,
        "atoms": problem.initial.n_atoms,
        "cost": cost,
        "action_cost": action_cost,
        "data_seed": data_seed,
    }
    return problem, description


def draw(result: ClaimResult, figure: Figure) -> None:
    """Left: DP value against brute-force value. Right: transitions of each."""
    rows = result.figures["rows"]
    dp = np.array([row["dp_value"] for row in rows])
    brute = np.array([row["brute_value"] for row in rows])
    left, right = figure.subplots(1, 2)

    low, high = min(dp.min(), brute.min()), max(dp.max(), brute.max())
    left.plot([low, high], [low, high], color="#999999", linewidth=1, label="equal")
    for cost, marker in (("mse", "o"), ("error", "s")):
        chosen = [row["cost"] == cost for row in rows]
        left.plot(brute[chosen], dp[chosen], marker, label=cost, alpha=0.7)
    left.set_xlabel("brute-force minimum")
    left.set_ylabel("DP value")
    left.set_title(f"max |difference| = {result.figures['max_abs_difference']:.3g}")
    left.legend(loc="best")

    dp_moves = np.array([row["dp_transitions"] for row in rows])
    brute_moves = np.array([row["brute_transitions"] for row in rows])
    top = max(dp_moves.max(), brute_moves.max())
    right.plot([1, top], [1, top], color="#999999", linewidth=1)
    layers = np.array([row["layers"] for row in rows])
    for horizon in sorted(set(layers.tolist())):
        chosen = layers == horizon
        right.plot(
            brute_moves[chosen], dp_moves[chosen], "o", alpha=0.7, label=f"T={horizon}"
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("brute-force transitions")
    right.set_ylabel("DP transitions")
    right.set_title("work per instance")
    right.legend(loc="best")
