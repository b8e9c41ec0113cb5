"""Claim 5: empirical consistency, value and plan settle as the sample grows.

M sequences are drawn from one fixed source (the order generator, or a bootstrap
resample of the digits training part), for M on a geometric grid and several
independent draws per M. Every draw is quantized with the same embedding, codebook
and actions (fitted once on a separate draw) and solved by DP. A much larger draw
gives the reference: its plan (the large-M plan) and its measure, on which any plan
can be costed.

Figures per M: the mean and the spread (standard deviation over draws) of the value
``V_M``; the distance of each plan to the reference plan in the weight metric and
whether it is equal; and the plan's *excess cost* on the reference measure,
``V_ref(plan_M) - V_ref(plan_ref) >= 0``. Plans of near-tied actions may keep
switching for a long time while costing the same: the excess cost settles even then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ocformer.baselines import plan_value
from ocformer.config import QuantizerConfig, TrainConfig
from ocformer.data import Dataset, load_dataset, order, split_dataset
from ocformer.embedding import EmbeddingConfig
from ocformer.solver import solve
from ocformer.verify.claim import ClaimResult, Settings
from ocformer.verify.distance import plan_distance
from ocformer.verify.fixed import FixedQuantizers
from ocformer.verify.rates import log_slope

NUMBER = 5
# The standard deviation of V_M over draws must shrink at least this fast in M
# (the central limit theorem predicts -0.5).
MAX_SPREAD_SLOPE = -0.25
CRITERION = (
    "(a) the log-log slope of the spread (std over draws) of V_M against M is "
    f"<= {MAX_SPREAD_SLOPE:g}; (b) the plans' mean excess cost on the reference "
    "measure, averaged over the larger half of the M values, is below its average "
    "over the smaller half (or 0 in both: every plan optimal there)."
)


@dataclass(frozen=True)
class Sizes:
    """The sample sizes and the problem.

    Attributes:
        samples: the values of M, increasing.
        draws: independent draws per M.
        reference: sequences of the reference draw.
        fit: sequences of the draw the quantizers are fitted on.
        n_layers: the horizon.
    """

    samples: tuple[int, ...]
    draws: int
    reference: int
    fit: int
    n_layers: int


QUICK = Sizes(
    samples=(32, 64, 128, 256, 512, 1024),
    draws=4,
    reference=4096,
    fit=1024,
    n_layers=1,
)
FULL = Sizes(
    samples=(32, 64, 128, 256, 512, 1024, 2048, 4096),
    draws=8,
    reference=16384,
    fit=2048,
    n_layers=2,
)


class Source:
    """Draws of M sequences from one fixed distribution.

    The order task draws fresh sequences from its generator; a real dataset (digits)
    is resampled with replacement from its training part, the empirical
    distribution standing in for the unknown one.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        if settings.data == "order":
            self.pool = None
        else:
            whole = load_dataset(settings.data)
            self.pool = split_dataset(whole, seed=settings.seed_for(NUMBER, 0)).train

    def draw(self, size: int, *path: int) -> Dataset:
        """``size`` sequences, seeded by the run's seed and ``path``."""
        seed = self.settings.seed_for(NUMBER, *path)
        if self.pool is None:
            return order(n_sequences=size, seed=seed)
        rng = np.random.default_rng(seed)
        return self.pool.subset(rng.integers(0, self.pool.n_sequences, size))


def check(settings: Settings) -> ClaimResult:
    """Solve draws of growing size with fixed quantizers and compare them."""
    sizes = QUICK if settings.quick else FULL
    source = Source(settings)
    config = TrainConfig(
        n_layers=sizes.n_layers,
        embedding=EmbeddingConfig(dim=2),
        quantizer=QuantizerConfig(codes=8),
    )
    quantizers = FixedQuantizers.fit(source.draw(sizes.fit, 1), config)
    weights = quantizers.template.actions.weights
    reference_problem = quantizers.problem_of(source.draw(sizes.reference, 2))
    reference = solve(reference_problem)

    levels = []
    for size in sizes.samples:
        values, distances, excess = [], [], []
        equal = 0
        for index in range(sizes.draws):
            solution = solve(quantizers.problem_of(source.draw(size, 3, size, index)))
            values.append(solution.value)
            distances.append(plan_distance(weights, solution.plan, reference.plan))
            equal += solution.plan == reference.plan
            excess.append(
                plan_value(reference_problem, solution.plan) - reference.value
            )
        levels.append(
            {
                "m": size,
                "values": values,
                "mean_value": float(np.mean(values)),
                "spread": float(np.std(values)),
                "plan_distances": distances,
                "mean_distance": float(np.mean(distances)),
                "equal_plans": equal,
                "excess": excess,
                "mean_excess": float(np.mean(excess)),
            }
        )

    figures = summarize(levels)
    figures.update(
        reference_value=reference.value,
        reference_plan=list(reference.plan),
        reference_sequences=sizes.reference,
        draws=sizes.draws,
        layers=sizes.n_layers,
        levels=levels,
    )
    notes = []
    if figures["spread_slope"] is None:
        notes.append("no spread slope: the value did not vary between draws")
    return ClaimResult(
        number=NUMBER,
        name="consistency",
        title="Empirical consistency",
        checked=(
            f"{sizes.draws} draws of M = {sizes.samples[0]} to {sizes.samples[-1]} "
            f"{settings.data} sequences "
            f"({'generator' if settings.data == 'order' else 'bootstrap resample'}), "
            f"{sizes.n_layers}-layer problem, quantizers fitted once; reference: "
            f"a draw of {sizes.reference}. Value spread, plan distance in the weight "
            "metric, equal plans and excess cost on the reference measure."
        ),
        criterion=CRITERION,
        passed=figures.pop("passed"),
        figures=figures,
        summary=(
            "spread slope "
            + (
                "none"
                if figures["spread_slope"] is None
                else f"{figures['spread_slope']:.2f}"
            )
            + f"; excess cost {figures['excess_smaller_half']:.3g} (smaller M) -> "
            f"{figures['excess_larger_half']:.3g} (larger M); equal plans at the "
            f"largest M {levels[-1]['equal_plans']}/{sizes.draws}"
        ),
        notes=tuple(notes),
    )


def summarize(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The two parts of the criterion from the per-M figures.

    Args:
        levels: one dictionary per M, increasing, with ``m``, ``spread`` and
            ``mean_excess``.

    Example:
        >>> levels = [
        ...     {"m": 10, "spread": 0.1, "mean_excess": 0.02},
        ...     {"m": 1000, "spread": 0.01, "mean_excess": 0.0},
        ... ]
        >>> figures = summarize(levels)
        >>> figures["passed"], round(figures["spread_slope"], 6)
        (True, -0.5)
    """
    slope = log_slope([level["m"] for level in levels], [x["spread"] for x in levels])
    half = len(levels) // 2
    excess = [level["mean_excess"] for level in levels]
    smaller = float(np.mean(excess[:half]))
    larger = float(np.mean(excess[len(levels) - half :]))
    spread_ok = slope is not None and slope <= MAX_SPREAD_SLOPE
    excess_ok = larger < smaller or larger == smaller == 0
    first, last = levels[0], levels[-1]
    return {
        "passed": bool(spread_ok and excess_ok),
        "spread_slope": slope,
        "spread_ratio": last["spread"] / first["spread"] if first["spread"] else None,
        "excess_smaller_half": smaller,
        "excess_larger_half": larger,
    }


def draw(result: ClaimResult, figure: Figure) -> None:
    """Left: V_M per draw, its mean and the reference value. Right: the plans'
    excess cost and distance to the reference plan."""
    figures = result.figures
    levels = figures["levels"]
    sizes = np.array([level["m"] for level in levels])
    left, right = figure.subplots(1, 2)

    for level in levels:
        left.plot(
            [level["m"]] * len(level["values"]), level["values"], ".", color="#6b8fb5"
        )
    left.plot(
        sizes,
        [level["mean_value"] for level in levels],
        "D-",
        color="#1f3b5c",
        label="mean V_M",
    )
    left.axhline(
        figures["reference_value"], color="#b2182b", linestyle="--", label="reference"
    )
    left.set_xscale("log")
    left.set_xlabel("M (sequences)")
    left.set_ylabel("quantized value V_M")
    slope = figures["spread_slope"]
    fitted = "none" if slope is None else f"{slope:.2f}"
    left.set_title(f"value (spread slope {fitted})")
    left.legend(loc="best", fontsize="small")

    right.plot(
        sizes,
        [level["mean_excess"] for level in levels],
        "D-",
        color="#1f3b5c",
        label="mean excess cost",
    )
    right.set_xscale("log")
    right.set_xlabel("M (sequences)")
    right.set_ylabel("excess cost on the reference measure")
    twin = right.twinx()
    twin.plot(
        sizes,
        [level["mean_distance"] for level in levels],
        "s:",
        color="#d6604d",
        label="mean plan distance",
    )
    twin.set_ylabel("distance to the reference plan (weight metric)")
    right.set_title("plan")
    handles = right.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    right.legend(
        handles[0] + extra[0], handles[1] + extra[1], loc="best", fontsize="small"
    )
