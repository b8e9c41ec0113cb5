"""Dynamic programming against brute force where quantized states merge.

With a coarse codebook, different action histories reach the same quantized measure
and DP expands each only once, while brute force rolls out all ``L^T`` plans. The
script measures, per configuration, the transitions and wall time of both and checks
that they find the identical optimum.

    python benchmarks/dp_vs_brute.py            # table
    python benchmarks/dp_vs_brute.py --json     # one JSON object; the summary is T=4
"""

from __future__ import annotations

import argparse

import numpy as np
from harness import SMALL_GRID, emit, make_problem, timed

from ocformer.data import order
from ocformer.solver import solve

# (sequences of the order task, token dimension, codes, layers)
CONFIGURATIONS = [
    (64, 2, 3, 2),
    (64, 2, 3, 3),
    (64, 2, 3, 4),
    (128, 2, 3, 4),
    (64, 4, 4, 4),
]


def measure(n_sequences: int, dim: int, codes: int, n_layers: int, seed: int):
    """One row: both solvers on one problem."""
    problem = make_problem(
        order(n_sequences=n_sequences, seed=seed),
        n_layers=n_layers,
        dim=dim,
        codes=codes,
        grid=SMALL_GRID,
        seed=seed,
    )
    # DP takes fractions of a second, where one scheduling hiccup on a shared machine
    # doubles a figure: it is timed as the median of three runs. Brute force, which
    # takes seconds to minutes, once.
    runs = [timed(lambda: solve(problem, "dp")) for _ in range(3)]
    dp, dp_seconds = runs[0][0], float(np.median([seconds for _, seconds in runs]))
    brute, brute_seconds = timed(lambda: solve(problem, "brute"))
    return {
        "sequences": n_sequences,
        "dim": dim,
        "codes": codes,
        "actions": len(problem.actions),
        "layers": n_layers,
        "dp_states_per_layer": list(dp.states_per_layer),
        "dp_transitions": dp.transitions,
        "brute_transitions": brute.transitions,
        "transition_ratio": brute.transitions / dp.transitions,
        "dp_seconds": dp_seconds,
        "brute_seconds": brute_seconds,
        "time_ratio": brute_seconds / dp_seconds,
        "same_value": dp.value == brute.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    measure(64, 2, 3, 1, args.seed)  # warm-up: imports, allocator, thread pools
    rows = [measure(*configuration, args.seed) for configuration in CONFIGURATIONS]
    headline = next(row for row in rows if row["layers"] == 4)
    summary = {
        key: headline[key]
        for key in (
            "dp_transitions",
            "brute_transitions",
            "transition_ratio",
            "time_ratio",
            "same_value",
        )
    }
    summary["all_same_value"] = all(row["same_value"] for row in rows)
    emit("DP against brute force (order task)", rows, summary, as_json=args.json)


if __name__ == "__main__":
    main()
