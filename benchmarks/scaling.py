"""How exact DP scales: time and peak memory over sequences, tokens, actions, layers.

Each configuration runs in a fresh process, so that its peak resident memory is its
own. Around a base configuration (the order task, 128 sequences of 4 tokens, d = 4,
8 codes, 8 actions, 2 layers) one size varies at a time; the script fits the exponent
``b`` of ``time ~ size^b`` for sequences, tokens and actions, and the growth factor per
layer. A second sweep runs digits (all training sequences, 3 layers, 32 actions) over
measure radii EPS and reports the states per layer, the value and the true-model
losses and test accuracy against EPS (2 layers with --quick).

    python benchmarks/scaling.py            # tables
    python benchmarks/scaling.py --json     # one JSON object
    python benchmarks/scaling.py --quick    # a smaller grid
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
from harness import SMALL_GRID, emit, make_problem, timed

BASE = {"n_sequences": 128, "n_tokens": 4, "actions": 8, "n_layers": 2}
SWEEPS = {
    "n_sequences": [64, 128, 256, 512, 1024],
    "n_tokens": [4, 8, 16],
    "actions": [4, 8, 16, 32],
    "n_layers": [1, 2, 3],
}
RADII = [0.0, 0.002, 0.005, 0.01, 0.02]


def grid_of(actions: int) -> dict:
    """A grid with ``actions`` actions: more temperatures for larger sets."""
    grid = dict(SMALL_GRID)
    grid["temperature"] = tuple(np.linspace(0.0, 2.0, max(1, actions // 4)))
    return grid


def run_one(settings: dict) -> dict:
    """Solve one configuration in this process; time and peak memory."""
    from ocformer.data import order
    from ocformer.solver import solve

    if settings["kind"] == "size":
        dataset = order(
            n_sequences=settings["n_sequences"], n_tokens=settings["n_tokens"]
        )
        problem = make_problem(
            dataset,
            n_layers=settings["n_layers"],
            dim=4,
            codes=8,
            grid=grid_of(settings["actions"]),
        )
        solution, seconds = timed(lambda: solve(problem, "dp"))
        result = {"seconds": seconds, "states": list(solution.states_per_layer)}
    else:
        result = _run_radius(settings["radius"], settings["n_layers"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {**result, "peak_bytes": peak}


def _run_radius(radius: float, n_layers: int) -> dict:
    """Train on digits with a measure radius; figures of the solution and the model."""
    import ocformer

    data = ocformer.load_dataset("digits")
    config = ocformer.TrainConfig(
        n_layers=n_layers, quantizer=ocformer.QuantizerConfig(measure_radius=radius)
    )
    result, seconds = timed(lambda: ocformer.train(data, config))
    report = result.report
    return {
        "seconds": seconds,
        "states": report["counts"]["states_per_layer"],
        "value": report["quantized_value"],
        "train_loss": report["train_loss"],
        "test_loss": report["test_loss"],
        "test_accuracy": report["test_accuracy"],
    }


def in_fresh_process(settings: dict) -> dict:
    """Run ``run_one`` in a child interpreter and read back its JSON line."""
    output = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(settings)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def fit_exponent(sizes, seconds) -> float:
    """Slope of log(seconds) against log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return

    sweeps = {k: v[:3] for k, v in SWEEPS.items()} if args.quick else SWEEPS
    radii = RADII[:3] if args.quick else RADII
    radius_layers = 2 if args.quick else 3
    in_fresh_process({"kind": "size", **BASE})  # warm-up: file caches, imports

    rows, summary = [], {}
    for name, values in sweeps.items():
        seconds = []
        for value in values:
            settings = {"kind": "size", **BASE, name: value}
            figures = in_fresh_process(settings)
            seconds.append(figures["seconds"])
            rows.append({"vary": name, **{k: settings[k] for k in BASE}, **figures})
        if name == "n_layers":
            growth = np.exp(np.polyfit(values, np.log(seconds), 1)[0])
            summary["time_growth_per_layer"] = float(growth)
        else:
            summary[f"time_exponent_{name}"] = fit_exponent(values, seconds)

    radius_rows = []
    for radius in radii:
        settings = {"kind": "radius", "radius": radius, "n_layers": radius_layers}
        figures = in_fresh_process(settings)
        radius_rows.append({"radius": radius, **figures})
    summary["radius_sweep"] = radius_rows

    if args.json:
        emit("", rows, summary, as_json=True)
        return
    radius_summary = summary.pop("radius_sweep")
    emit("DP time and peak memory (order task)", rows, summary, as_json=False)
    title = f"digits, {radius_layers} layers, 32 actions, against the measure radius"
    emit(title, radius_summary, {}, as_json=False)


if __name__ == "__main__":
    main()
