"""Claim 4: the value is continuous in the data, V moves by O(W1).

The training measure ``Lambda_0`` is perturbed by controlled amounts in two ways:

- noise: every real token moves by Gaussian noise of standard deviation sigma in X
  and is projected back onto X;
- replacement: a fraction of the sequences is replaced by fresh sequences of the same
  source (new draws of the generator, or held-out sequences of a real dataset).

For each perturbation the distance ``W1(Lambda_0, Lambda_0')`` is computed exactly
with POT (``coreset.measure_distance``), and the perturbed problem is solved by DP
with the *same* embedding, codebook and actions (``fixed.FixedQuantizers``): refitting
them would move the value by the change of quantizers, not of the data.

The Lipschitz bound is then checked out of sample: ``L`` is the largest ratio
``|V' - V| / W1`` over the perturbations whose W1 lies above the median, and every
perturbation at or below the median must satisfy

    |V' - V|  <=  MARGIN * L * W1  +  1 / M.

The last term is the resolution of the *quantized* value, stated before any figure is
computed: a token that crosses the boundary of its codeword cell moves its whole
sequence, one atom of weight 1/M, however small the perturbation, and changes the
value by about 1/M times that sequence's loss (of order one for the squared error
onto one-hot classes). A jump of V as W1 -> 0, such as the one refitted quantizers
would cause, breaks the bound on the lower half, which spans more than a decade of W1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ocformer.config import QuantizerConfig, TrainConfig
from ocformer.coreset import measure_distance
from ocformer.data import Dataset, load_dataset, split_dataset
from ocformer.embedding import EmbeddingConfig, project
from ocformer.solver import solve
from ocformer.verify.claim import ClaimResult, Settings
from ocformer.verify.fixed import FixedQuantizers
from ocformer.verify.rates import log_slope

NUMBER = 4
# The bound learnt on the larger perturbations may grow by this factor on the
# smaller ones: room for the scatter of a maximum taken over a few draws.
MARGIN = 4.0
CRITERION = (
    "L = the largest |dV| / W1 over the perturbations with W1 above the median; "
    f"every perturbation at or below the median satisfies |dV| <= {MARGIN:g} L W1 "
    "+ 1/M (M sequences: one atom's weight, the resolution of the quantized value)."
)


@dataclass(frozen=True)
class Sizes:
    """The perturbations and the problem they are applied to.

    Attributes:
        sequences: sequences drawn before the split (the training part is 80%).
        n_layers: the horizon of the problem solved for each perturbation.
        sigmas: noise levels (standard deviation per token coordinate in X).
        fractions: shares of the sequences replaced.
        repeats: draws per level.
    """

    sequences: int
    n_layers: int
    sigmas: tuple[float, ...]
    fractions: tuple[float, ...]
    repeats: int


QUICK = Sizes(
    sequences=512,
    n_layers=1,
    sigmas=(0.001, 0.004, 0.016, 0.064, 0.256),
    fractions=(1 / 64, 1 / 16, 1 / 4),
    repeats=2,
)
FULL = Sizes(
    sequences=512,
    n_layers=2,
    sigmas=(0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256),
    fractions=(1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2),
    repeats=3,
)


def base_config(n_layers: int) -> TrainConfig:
    """The configuration whose quantizers stay fixed: 2-d tokens, 8 k-means codes,
    the default 33 grid actions."""
    return TrainConfig(
        n_layers=n_layers,
        embedding=EmbeddingConfig(dim=2),
        quantizer=QuantizerConfig(codes=8),
    )


def check(settings: Settings) -> ClaimResult:
    """Perturb the training measure, solve each perturbed problem, compare."""
    sizes = QUICK if settings.quick else FULL
    rng = settings.rng(NUMBER)
    train, fresh = datasets(settings, sizes.sequences)
    config = base_config(sizes.n_layers)
    quantizers = FixedQuantizers.fit(train, config)
    n_classes = train.n_classes if train.task == "classification" else None
    radius = config.embedding.radius

    tokens = quantizers.embed(train)  # (M, n, dim)
    mask, targets = train.mask, train.targets
    value = solve(quantizers.problem(tokens, mask, targets)).value
    spare = quantizers.embed(fresh)  # (M', n, dim)

    rows = []
    for kind, levels in (("noise", sizes.sigmas), ("replace", sizes.fractions)):
        for level in levels:
            for _ in range(sizes.repeats):
                if kind == "noise":
                    moved = add_noise(tokens, mask, level, rng, config)
                    moved_targets = targets
                else:
                    moved, moved_targets = replace(
                        tokens, targets, spare, fresh.targets, level, rng
                    )
                distance = measure_distance(
                    tokens,
                    targets,
                    moved,
                    moved_targets,
                    n_classes=n_classes,
                    radius=radius,
                )
                problem = quantizers.problem(moved, mask, moved_targets)
                change = abs(solve(problem).value - value)
                rows.append(
                    {"kind": kind, "level": level, "w1": distance, "change": change}
                )

    figures = summarize(rows, resolution=1.0 / train.n_sequences)
    figures["value"] = value
    figures["sequences"] = train.n_sequences
    figures["layers"] = sizes.n_layers
    notes = []
    if figures["slope"] is None:
        notes.append("no slope: fewer than two perturbations moved the value")
    return ClaimResult(
        number=NUMBER,
        name="continuity",
        title="Value is continuous in the data",
        checked=(
            f"{len(rows)} perturbations of the {train.n_sequences}-sequence "
            f"{settings.data} training measure ({sizes.n_layers}-layer problem, "
            "quantizers fitted once): Gaussian token noise of "
            f"sigma {min(sizes.sigmas):g} to {max(sizes.sigmas):g} and replacement "
            f"of {min(sizes.fractions):.3g} to {max(sizes.fractions):.3g} of the "
            f"sequences, {sizes.repeats} draws each; W1 by POT, |dV| of the DP "
            "values."
        ),
        criterion=CRITERION,
        passed=figures.pop("passed"),
        figures=figures,
        summary=(
            f"L {figures['lipschitz']:.3g} above the median W1, worst ratio below "
            f"{figures['worst_ratio_below']:.3g}; log-log slope "
            + ("none" if figures["slope"] is None else f"{figures['slope']:.2f}")
        ),
        notes=tuple(notes),
    )


def summarize(rows: list[dict[str, Any]], *, resolution: float) -> dict[str, Any]:
    """The Lipschitz estimate of the upper half and its check on the lower half.

    Args:
        rows: one dictionary per perturbation with ``w1`` (> 0) and ``change``.
        resolution: the additive term of the bound, 1/M.

    Returns:
        The figures, ``passed`` included.

    Example:
        >>> rows = [{"w1": w, "change": 0.5 * w} for w in (0.1, 0.2, 0.4, 0.8)]
        >>> figures = summarize(rows, resolution=0.0)
        >>> figures["passed"], figures["lipschitz"], figures["worst_ratio_below"]
        (True, 0.5, 0.5)
    """
    distances = np.array([row["w1"] for row in rows])
    changes = np.array([row["change"] for row in rows])
    ratios = changes / distances
    median = float(np.median(distances))
    above = distances > median
    if not above.any() or above.all():  # every W1 equal: no split to calibrate on
        above = np.zeros(len(rows), dtype=bool)
        above[int(np.argmax(distances))] = True
    lipschitz = float(ratios[above].max())
    bound = MARGIN * lipschitz * distances[~above]
    return {
        "passed": bool((changes[~above] <= bound + resolution).all()),
        # Whether the resolution term was needed: shown, not part of the verdict.
        "holds_without_resolution": bool((changes[~above] <= bound).all()),
        "median_w1": median,
        "lipschitz": lipschitz,
        "resolution": resolution,
        "worst_ratio_below": float(ratios[~above].max()),
        "max_ratio": float(ratios.max()),
        "slope": log_slope(distances.tolist(), changes.tolist()),
        "unchanged": int((changes == 0).sum()),
        "margin": MARGIN,
        "rows": rows,
    }


def datasets(settings: Settings, sequences: int) -> tuple[Dataset, Dataset]:
    """The training part of the data, and fresh sequences of the same source.

    For the generator (order) the fresh sequences are a new draw; for a real
    dataset (digits) they are the held-out part of the same subset.
    """
    seed = settings.seed_for(NUMBER, 0)
    dataset = load_dataset(settings.data, seed=seed, n_sequences=sequences)
    split = split_dataset(dataset, seed=seed)
    if settings.data == "order":
        fresh = load_dataset("order", seed=settings.seed_for(NUMBER, 1))
        return split.train, fresh
    return split.train, split.test


def add_noise(
    tokens: np.ndarray,
    mask: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    config: TrainConfig,
) -> np.ndarray:
    """Gaussian noise on every real token, projected back onto X.

    Args:
        tokens: float array of shape (M, n_tokens, dim), points of X.
        mask: bool array of shape (M, n_tokens).
        sigma: standard deviation per coordinate.

    Returns:
        The moved tokens, shape (M, n_tokens, dim), padding 0.
    """
    noisy = tokens + sigma * rng.standard_normal(tokens.shape)
    moved = project(
        torch.as_tensor(noisy),
        space=config.embedding.space,
        radius=config.embedding.radius,
    ).numpy()
    moved[~mask] = 0.0
    return moved


def replace(
    tokens: np.ndarray,
    targets: np.ndarray,
    spare: np.ndarray,
    spare_targets: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace ``round(fraction * M)`` sequences (at least one) by spare ones.

    Args:
        tokens: float array of shape (M, n_tokens, dim).
        targets: array of shape (M,).
        spare: float array of shape (M', n_tokens, dim), sequences of the same
            source.
        spare_targets: array of shape (M',).
        fraction: share of the sequences replaced, in (0, 1].
    """
    count = max(1, round(fraction * len(tokens)))
    chosen = rng.choice(len(tokens), size=count, replace=False)
    sources = rng.choice(len(spare), size=count, replace=count > len(spare))
    moved, moved_targets = tokens.copy(), targets.copy()
    moved[chosen] = spare[sources]
    moved_targets[chosen] = spare_targets[sources]
    return moved, moved_targets


def draw(result: ClaimResult, figure: Figure) -> None:
    """|dV| against W1 on log axes, with the fitted bound and its margin."""
    figures = result.figures
    axes = figure.add_subplot()
    rows = figures["rows"]
    for kind, marker in (("noise", "o"), ("replace", "s")):
        chosen = [row for row in rows if row["kind"] == kind]
        # A zero change cannot sit on a log axis: it is drawn at the bottom edge.
        axes.plot(
            [row["w1"] for row in chosen],
            [max(row["change"], 1e-7) for row in chosen],
            marker,
            alpha=0.75,
            label=f"{kind} ({len(chosen)})",
        )
    distances = np.array([row["w1"] for row in rows])
    span = np.geomspace(distances.min(), distances.max(), 50)
    lipschitz = figures["lipschitz"]
    axes.plot(
        span, lipschitz * span, color="#444444", label=f"L W1, L = {lipschitz:.3g}"
    )
    axes.plot(
        span,
        figures["margin"] * lipschitz * span + figures["resolution"],
        color="#444444",
        linestyle="--",
        label=f"{figures['margin']:g} L W1 + 1/M (bound below the median)",
    )
    axes.axvline(figures["median_w1"], color="#bbbbbb", linewidth=1)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("W1(original, perturbed training measure)")
    axes.set_ylabel("|V(perturbed) - V(original)|")
    slope = figures["slope"]
    fitted = "none" if slope is None else f"{slope:.2f}"
    axes.set_title(f"value change against data change (log-log slope {fitted})")
    axes.legend(loc="best", fontsize="small")
