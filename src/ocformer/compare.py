"""Side by side: the exact DP plan against what one would use instead.

For every seed, one split, one embedding and one quantized problem are built, and
every method trains the same model on them (``ocformer.baselines``):

- ``dp``: the exact DP plan of the quantized model (``ocformer train``);
- ``adam``: continuous weights trained with Adam, the unconstrained reference;
- ``adam-round``: that Adam fit, each layer projected onto the nearest action;
- ``adam-ste``: Adam through the nearest action with a straight-through gradient;
- ``cma``: CMA-ES over the grid family's parameters, then the nearest action;
- ``random``: the best of random plans of the finite set, as many transitions as
  the DP evaluated.

Every row holds the plan's cost on the quantized model (for the methods that end in
the finite set), the true model's losses and accuracies (head refitted on the
unquantized training trajectory, as ``ocformer train`` exports it), the wall time
and the evaluations (layers applied to a whole training measure). The DP's plan is
optimal for the quantized model, so its ``quantized_value`` is at most every other
finite-set method's on the same seed; ``Comparison.dp_optimal`` checks it.

Everything runs on one torch thread, so that a seed's rows are the same bits on any
number of cores; only the wall times differ between runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocformer.baselines import (
    fit_adam,
    fit_cma,
    nearest_actions,
    plan_value,
    random_plans,
)
from ocformer.config import TrainConfig
from ocformer.cost import check_cost
from ocformer.data import Dataset, Split, split_dataset
from ocformer.errors import ConfigError
from ocformer.solver import solve
from ocformer.threads import one_thread
from ocformer.train import Setup, build_model, build_problem, evaluate

METHODS = ("dp", "adam", "adam-round", "adam-ste", "cma", "random")
# The methods whose plans lie in the finite action set.
FINITE_METHODS = ("dp", "adam-round", "adam-ste", "cma", "random")
# What each method minimises: "cost" is the run's cost (mse or 0-1 error).
OBJECTIVES = {
    "dp": "cost",
    "adam": "mse",
    "adam-round": "mse",
    "adam-ste": "mse",
    "cma": "cost",
    "random": "cost",
}
# More seeds than this would run for days.
MAX_SEEDS = 1000

Progress = Callable[[int, str], None]


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    """What to compare and with which budgets.

    Attributes:
        methods: the methods to run, from ``METHODS`` (``random`` needs ``dp``:
            it gets the DP's number of transitions).
        seeds: seeds 0 .. seeds-1; each seeds the split, the embedding, the
            codebook and every method's own randomness.
        steps: Adam steps (full batch) of ``adam`` and ``adam-ste``.
        learning_rate: Adam's step size.
        cma_evaluations: the most candidates CMA-ES evaluates.
    """

    methods: tuple[str, ...] = METHODS
    seeds: int = 3
    steps: int = 200
    learning_rate: float = 0.05
    cma_evaluations: int = 600

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"`methods` must be a non-empty list from {', '.join(METHODS)}, got "
                f"{list(self.methods)}; e.g. --methods dp,adam,random."
            )
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(
                f"`methods` lists a method twice, got {list(self.methods)}; list each "
                "method once."
            )
        if "random" in self.methods and "dp" not in self.methods:
            raise ConfigError(
                "`random` draws as many transitions as dp evaluates, got methods "
                f"{list(self.methods)} without dp; add dp or drop random."
            )
        if isinstance(self.seeds, int) and self.seeds > MAX_SEEDS:
            raise ConfigError(
                f"`seeds` must be at most {MAX_SEEDS}, got {self.seeds}; each seed "
                "trains every method once, so use a few."
            )
        for name, value in (
            ("seeds", self.seeds),
            ("steps", self.steps),
            ("cma_evaluations", self.cma_evaluations),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"`learning_rate` must be a positive number, got "
                f"{self.learning_rate}; use e.g. 0.05."
            )


@dataclass(frozen=True)
class Comparison:
    """The rows of a comparison and what they were run on.

    Attributes:
        data: the dataset's name.
        task: ``"classification"`` or ``"regression"``.
        cost: the run's cost, ``"mse"`` or ``"error"``.
        config: the model's configuration (``TrainConfig.to_dict``).
        options: the comparison's options.
        rows: one dictionary per method and seed (see ``row_fields``).
        baselines: per seed, the test figures of the model with no layers.
    """

    data: str
    task: str
    cost: str
    config: dict[str, Any]
    options: dict[str, Any]
    rows: list[dict[str, Any]]
    baselines: list[dict[str, Any]]

    @property
    def methods(self) -> list[str]:
        """The methods compared, in the order they ran."""
        return list(dict.fromkeys(row["method"] for row in self.rows))

    def dp_optimal(self) -> dict[str, Any]:
        """Check, seed by seed, that no finite-set plan beats the DP's on the
        quantized model.

        Returns:
            ``{"holds": bool, "checked": pairs compared, "violations": [...]}``;
            ``holds`` is None when there is nothing to compare.
        """
        violations, checked = [], 0
        for dp_row in (row for row in self.rows if row["method"] == "dp"):
            for row in self.rows:
                if (
                    row["seed"] != dp_row["seed"]
                    or row["method"] == "dp"
                    or row["quantized_value"] is None
                ):
                    continue
                checked += 1
                if row["quantized_value"] < dp_row["quantized_value"]:
                    violations.append(
                        {
                            "seed": row["seed"],
                            "method": row["method"],
                            "value": row["quantized_value"],
                            "dp_value": dp_row["quantized_value"],
                        }
                    )
        return {
            "holds": (not violations) if checked else None,
            "checked": checked,
            "violations": violations,
        }

    def summary(self) -> list[dict[str, Any]]:
        """Per method: mean, minimum and maximum of each figure over the seeds."""
        summaries = []
        for method in self.methods:
            rows = [row for row in self.rows if row["method"] == method]
            entry: dict[str, Any] = {"method": method, "seeds": len(rows)}
            for name in row_fields(self.task, self.cost)[4:]:
                values = [row[name] for row in rows if row.get(name) is not None]
                if values:
                    entry[name] = {
                        "mean": float(np.mean(values)),
                        "min": float(min(values)),
                        "max": float(max(values)),
                    }
            summaries.append(entry)
        return summaries

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able comparison (``compare.json``)."""
        return {
            "data": self.data,
            "task": self.task,
            "cost": self.cost,
            "config": self.config,
            "options": self.options,
            "dp_optimal": self.dp_optimal(),
            "summary": self.summary(),
            "baselines": self.baselines,
            "rows": self.rows,
        }


def row_fields(task: str, cost: str) -> list[str]:
    """The fields of a row, in order, for a task and a cost."""
    fields = ["method", "seed", "objective", "plan", "quantized_value"]
    fields += ["train_loss", "test_loss"]
    if task == "classification":
        fields += ["train_accuracy", "test_accuracy"]
        if cost == "error":
            fields += ["train_mse", "test_mse"]
    return [*fields, "wall_seconds", "evaluations"]


def compare(
    dataset: Dataset,
    config: TrainConfig | None = None,
    options: CompareConfig | None = None,
    *,
    progress: Progress | None = None,
) -> Comparison:
    """Train the same model on ``dataset`` with every method and seed.

    Args:
        dataset: the whole dataset; each seed splits it anew.
        config: the model and its quantizers (``ocformer train``'s options); its
            ``seed`` is replaced by each comparison seed.
        options: methods, seeds and budgets.
        progress: called as ``progress(seed, method)`` before each method runs.

    Returns:
        The comparison.

    Raises:
        ConfigError: on options that do not fit together: no layers, a measure
            radius (the DP would no longer be exact), brute force, or ``cma``
            without the grid family.
    """
    config = config or TrainConfig()
    options = options or CompareConfig()
    n_classes = dataset.n_classes if dataset.task == "classification" else None
    check_cost(config.cost, n_classes)
    _check_config(config, options)

    rows: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    with one_thread():
        for seed in range(options.seeds):
            seeded = dataclasses.replace(config, seed=seed)
            run = _SeedRun(dataset, seeded, options, seed, progress)
            rows += run.rows()
            baselines.append({"seed": seed, **run.baseline()})
    return Comparison(
        data=dataset.name,
        task=dataset.task,
        cost=config.cost,
        config=config.to_dict(),
        options=dataclasses.asdict(options) | {"methods": list(options.methods)},
        rows=rows,
        baselines=baselines,
    )


def _check_config(config: TrainConfig, options: CompareConfig) -> None:
    if config.n_layers < 1:
        raise ConfigError(
            f"`n_layers` must be >= 1 to compare ways of choosing layers, got "
            f"{config.n_layers}; use --layers 2."
        )
    if config.quantizer.measure_radius > 0:
        raise ConfigError(
            "compare needs the exact DP, got a measure radius of "
            f"{config.quantizer.measure_radius}; drop --measure-radius."
        )
    if config.method != "dp":
        raise ConfigError(
            f"compare runs the dp solver, got method {config.method!r}; drop "
            "--method (brute force finds the same plan)."
        )
    if "cma" in options.methods and config.actions.family != "grid":
        raise ConfigError(
            "`cma` searches the grid family's parameters, got family "
            f"{config.actions.family!r}; drop cma from --methods or use --family grid."
        )


class _SeedRun:
    """Every method on one seed: one split, one embedding, one quantized problem."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig,
        options: CompareConfig,
        seed: int,
        progress: Progress | None,
    ):
        self.dataset, self.config, self.options = dataset, config, options
        self.seed, self.progress = seed, progress
        self.split: Split = split_dataset(
            dataset, test_fraction=config.test_fraction, seed=seed
        )
        started = time.perf_counter()
        self.setup: Setup = build_problem(self.split.train, config)
        # The quantized problem is part of the cost of the methods that use it.
        self.setup_seconds = time.perf_counter() - started

    @property
    def actions(self):
        return self.setup.problem.actions

    def rows(self) -> list[dict[str, Any]]:
        """One row per method, in ``METHODS`` order."""
        methods, rows = self.options.methods, []
        if "dp" in methods:
            self._announce("dp")
            started = time.perf_counter()
            solution = solve(self.setup.problem, "dp")
            seconds = self.setup_seconds + time.perf_counter() - started
            rows.append(
                self._row(
                    "dp", solution.plan, solution.value, seconds, solution.transitions
                )
            )

        if "adam" in methods or "adam-round" in methods:
            self._announce("adam")
            adam = self._adam(actions=None)
            if "adam" in methods:
                rows.append(
                    self._row(
                        "adam", None, None, adam.seconds, adam.evaluations, adam.layers
                    )
                )
            if "adam-round" in methods:
                # The same fit, rounded: its time is Adam's plus the rounding.
                started = time.perf_counter()
                plan = nearest_actions(adam.layers, self.actions)
                seconds = adam.seconds + time.perf_counter() - started
                rows.append(self._finite_row("adam-round", plan, seconds, adam))

        if "adam-ste" in methods:
            self._announce("adam-ste")
            fit = self._adam(actions=self.actions)
            plan = nearest_actions(fit.layers, self.actions)
            rows.append(self._finite_row("adam-ste", plan, fit.seconds, fit))

        if "cma" in methods:
            self._announce("cma")
            fit = fit_cma(
                self.split.train,
                self.setup.embedding,
                self.config,
                seed=self.seed,
                evaluations=self.options.cma_evaluations,
            )
            plan = nearest_actions(fit.layers, self.actions)
            rows.append(self._finite_row("cma", plan, fit.seconds, fit))

        if "random" in methods:
            self._announce("random")
            dp_row = next(row for row in rows if row["method"] == "dp")
            n_plans = max(1, dp_row["evaluations"] // self.config.n_layers)
            search = random_plans(self.setup.problem, n_plans=n_plans, seed=self.seed)
            seconds = self.setup_seconds + search.seconds
            rows.append(
                self._row(
                    "random", search.plan, search.value, seconds, search.evaluations
                )
            )
        return rows

    def _announce(self, method: str) -> None:
        if self.progress is not None:
            self.progress(self.seed, method)

    def baseline(self) -> dict[str, float]:
        """Test figures of the same embedding, readout and head with no layers."""
        model = build_model(
            self.split.train, self.setup.embedding, [], self.config, None
        )
        figures = evaluate(model, self.split.test, self.config.cost)
        return {f"test_{name}": value for name, value in figures.items()}

    def _adam(self, actions):
        return fit_adam(
            self.split.train,
            self.setup.embedding,
            self.config,
            seed=self.seed,
            steps=self.options.steps,
            learning_rate=self.options.learning_rate,
            actions=actions,
        )

    def _finite_row(self, method, plan, seconds, fit) -> dict[str, Any]:
        value = plan_value(self.setup.problem, plan)
        return self._row(method, plan, value, seconds, fit.evaluations)

    def _row(self, method, plan, value, seconds, evaluations, layers=None):
        """The figures of a plan (or of continuous ``layers``) on the true model."""
        config, split = self.config, self.split
        if layers is None:
            layers = [self.actions.weights.select(action) for action in plan]
        model = build_model(
            split.train, self.setup.embedding, list(layers), config, None
        )
        objective = OBJECTIVES[method]
        row: dict[str, Any] = {
            "method": method,
            "seed": self.seed,
            "objective": config.cost if objective == "cost" else objective,
            "plan": list(plan) if plan is not None else None,
            "quantized_value": value,
        }
        train_figures = evaluate(model, split.train, config.cost)
        test_figures = evaluate(model, split.test, config.cost)
        row["train_loss"], row["test_loss"] = (
            train_figures["loss"],
            test_figures["loss"],
        )
        if "accuracy" in test_figures:
            row["train_accuracy"] = train_figures["accuracy"]
            row["test_accuracy"] = test_figures["accuracy"]
            if config.cost == "error":
                row["train_mse"] = evaluate(model, split.train, "mse")["loss"]
                row["test_mse"] = evaluate(model, split.test, "mse")["loss"]
        row["wall_seconds"] = round(seconds, 3)
        row["evaluations"] = int(evaluations)
        return row


def comparison_markdown(comparison: Comparison) -> str:
    """``compare.md``: the summary per method, the optimality check and every row."""
    task, cost = comparison.task, comparison.cost
    config = comparison.config
    seeds = comparison.options["seeds"]
    lines = [
        f"# ocformer compare: {comparison.data}",
        "",
        f"{task}, cost `{cost}`, {config['n_layers']} layers, seeds 0 to {seeds - 1}; "
        "each method trains the same model (embedding, layers, mean pooling, "
        "closed-form head) on the same split per seed. Figures are the mean over "
        "the seeds with the range in brackets.",
        "",
    ]
    fields = row_fields(task, cost)[4:]
    summary = comparison.summary()
    lines.append("| method | objective | " + " | ".join(fields) + " |")
    lines.append("| --- " * (len(fields) + 2) + "|")
    objectives = {row["method"]: row["objective"] for row in comparison.rows}
    for entry in summary:
        cells = [entry["method"], objectives[entry["method"]]]
        for name in fields:
            figure = entry.get(name)
            cells.append(_spread_text(figure) if figure else "-")
        lines.append("| " + " | ".join(cells) + " |")

    check = comparison.dp_optimal()
    lines += ["", "## The DP plan is optimal for the quantized model", ""]
    if check["holds"] is None:
        lines.append("No other finite-set method ran, so there is nothing to check.")
    elif check["holds"]:
        lines.append(
            f"Yes: on every seed, dp's quantized value is at most every other "
            f"finite-set method's ({check['checked']} comparisons)."
        )
    else:
        lines.append(
            f"**No**: {len(check['violations'])} of {check['checked']} comparisons "
            "found a finite-set plan below dp's value (this contradicts optimality "
            "and is a defect):"
        )
        for violation in check["violations"]:
            lines.append(
                f"- seed {violation['seed']}, {violation['method']}: "
                f"{violation['value']!r} < {violation['dp_value']!r}"
            )

    lines += ["", "## Every row", ""]
    fields = row_fields(task, cost)
    lines.append("| " + " | ".join(fields) + " |")
    lines.append("| --- " * len(fields) + "|")
    for row in comparison.rows:
        lines.append("| " + " | ".join(_cell(row.get(name)) for name in fields) + " |")
    lines += [
        "",
        "`quantized_value`: the plan's cost on the quantized model (finite-set "
        "methods only). `evaluations`: layers applied to a whole training measure "
        "(a DP transition, or one layer of one forward pass). `objective`: what the "
        "method minimised.",
        "",
    ]
    return "\n".join(lines)


def _spread_text(figure: dict[str, float]) -> str:
    return (
        f"{_number(figure['mean'])} [{_number(figure['min'])}, "
        f"{_number(figure['max'])}]"
    )


def _number(value: float) -> str:
    return f"{value:.4g}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value)


def comparison_figures(comparison: Comparison) -> dict[str, Any]:
    """The three figures by file name: the test metric per method, the quantized
    value per method, and wall time against evaluations."""
    from ocformer.plots import new_figure, spread_plot

    methods = comparison.methods
    rows = comparison.rows

    def values(method: str, name: str) -> list[float]:
        return [
            row[name]
            for row in rows
            if row["method"] == method and row.get(name) is not None
        ]

    classification = comparison.task == "classification"
    metric = "test_accuracy" if classification else "test_loss"
    label = "test accuracy" if classification else f"test {comparison.cost}"
    baseline = [entry[metric] for entry in comparison.baselines if metric in entry]
    figures = {}
    figure = new_figure()
    spread_plot(
        figure,
        methods,
        [values(method, metric) for method in methods],
        ylabel=label,
        title=f"{comparison.data}: {label} per method (true model)",
        reference=(float(np.mean(baseline)), "no layers") if baseline else None,
    )
    figures["compare-test.png"] = figure

    # Each seed is its own quantized problem: values are shown above the DP's value
    # on the same seed, where the DP ran, so that seeds line up at 0.
    finite = [m for m in methods if values(m, "quantized_value")]
    optimum = {r["seed"]: r["quantized_value"] for r in rows if r["method"] == "dp"}
    excess = [
        [
            row["quantized_value"] - optimum.get(row["seed"], 0.0)
            for row in rows
            if row["method"] == method and row["quantized_value"] is not None
        ]
        for method in finite
    ]
    figure = new_figure()
    spread_plot(
        figure,
        finite,
        excess,
        ylabel=f"quantized value{' - dp value' if optimum else ''} ({comparison.cost})",
        title=f"{comparison.data}: "
        + ("quantized cost above the DP plan's" if optimum else "quantized cost"),
    )
    figures["compare-value.png"] = figure

    figure = new_figure()
    axes = figure.add_subplot()
    for method, marker in zip(methods, "os^vDP", strict=False):
        axes.plot(
            values(method, "evaluations"),
            values(method, "wall_seconds"),
            marker,
            label=method,
            alpha=0.8,
        )
    # Log axes only where the figures span more than a decade.
    for name, scale in (
        ("evaluations", axes.set_xscale),
        ("wall_seconds", axes.set_yscale),
    ):
        spread = [row[name] for row in rows if row[name] > 0]
        if spread and max(spread) > 10 * min(spread):
            scale("log")
    axes.set_xlabel("evaluations (layers applied to a training measure)")
    axes.set_ylabel("wall seconds")
    axes.set_title(f"{comparison.data}: compute per method and seed")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figures["compare-time.png"] = figure
    return figures


def write_comparison(comparison: Comparison, out: Path) -> list[Path]:
    """Write ``compare.json``, ``compare.md`` and the PNG figures into ``out``.

    Every file is written atomically; the directory is created if needed.

    Returns:
        The paths written.
    """
    from ocformer.atomic import write_text_atomic
    from ocformer.plots import save_png

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in comparison_figures(comparison).items():
        save_png(figure, out / name)
        written.append(out / name)
    text = json.dumps(comparison.to_dict(), indent=1) + "\n"
    write_text_atomic(out / "compare.md", comparison_markdown(comparison))
    write_text_atomic(out / "compare.json", text)
    return [out / "compare.json", out / "compare.md", *written]
