"""Training end to end: data, quantized MDP, exact plan, torch module, report."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ocformer.actions import ActionSet, grid_actions, load_codebook, ternary_actions
from ocformer.checkpoint import Checkpoint
from ocformer.config import ExecutionConfig, TrainConfig
from ocformer.coreset import reduce_measure
from ocformer.cost import accuracy, check_cost, fit_head, loss
from ocformer.data import Dataset, split_dataset
from ocformer.dynamics import LayerWeights
from ocformer.embedding import Embedding, positional_encoding
from ocformer.errors import ConfigError
from ocformer.estimate import Estimate, estimate, format_bytes
from ocformer.mdp import QuantizedProblem
from ocformer.model import FORMAT, OCTransformer
from ocformer.parallel import open_mapper
from ocformer.quantize import (
    StateCodebook,
    canonical_measure,
    kmeans_codebook,
    uniform_codebook,
)
from ocformer.solver import Progress, Solution, solve

if TYPE_CHECKING:
    from ocformer.policy import PolicyTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """The open-loop plan: one action, hence one weight set, per layer.

    Attributes:
        actions: action index of each layer.
        parameters: the family coordinates of each layer's action, by name.
        weights: one single-action :class:`LayerWeights` per layer.
        value: its optimal cost in the quantized model.
    """

    actions: tuple[int, ...]
    parameters: tuple[dict[str, float], ...]
    weights: tuple[LayerWeights, ...]
    value: float


@dataclass(frozen=True)
class TrainResult:
    """What a training run returns.

    Attributes:
        plan: the optimal plan of the quantized model.
        solution: solver statistics (states, transitions).
        report: the report figures, as written to ``report.json``.
        model: the trained torch module (plan weights plus a refitted head).
    """

    plan: Plan
    solution: Solution
    report: dict[str, Any]
    model: OCTransformer

    def module(self) -> OCTransformer:
        """The trained model as an ordinary ``torch.nn.Module``."""
        return self.model


def build_actions(config: TrainConfig, dim: int, position_dim: int) -> ActionSet:
    """The finite action set that ``config.actions`` describes."""
    options = config.actions
    if options.family == "grid":
        return grid_actions(
            dim=dim,
            position_dim=position_dim,
            grid=options.grid,
            identity=options.identity,
        )
    if options.family == "ternary":
        return ternary_actions(
            dim=dim,
            position_dim=position_dim,
            entries=options.entries,
            scale=options.scale,
        )
    return load_codebook(options.path, dim=dim, position_dim=position_dim)


def build_codebook(config: TrainConfig, tokens: np.ndarray) -> StateCodebook:
    """The state codebook; ``tokens`` are the real embedded training tokens (P, dim)."""
    space, radius = config.embedding.space, config.embedding.radius
    if config.quantizer.codebook == "uniform":
        return uniform_codebook(
            dim=tokens.shape[1],
            levels=config.quantizer.codes,
            space=space,
            radius=radius,
        )
    return kmeans_codebook(
        tokens,
        codes=config.quantizer.codes,
        space=space,
        radius=radius,
        seed=config.seed,
    )


def evaluate(model: OCTransformer, data: Dataset, cost: str) -> dict[str, float]:
    """True-model figures of ``model`` on ``data``: loss, and accuracy for classes."""
    with torch.no_grad():
        outputs = model(data.tokens, data.mask)
    targets = torch.as_tensor(data.targets)
    weights = torch.full((len(targets),), 1.0 / len(targets), dtype=torch.float64)
    n_classes = data.n_classes if data.task == "classification" else None
    figures = {"loss": loss(outputs, targets, weights, kind=cost, n_classes=n_classes)}
    if n_classes is not None:
        figures["accuracy"] = accuracy(outputs, targets)
    return figures


def build_model(
    train: Dataset,
    embedding: Embedding,
    layers: list[LayerWeights],
    config: TrainConfig,
    source: dict[str, Any] | None,
) -> OCTransformer:
    """The torch module of a plan, its head refitted on the unquantized trajectory
    of the training part ``train``."""
    n_classes = train.n_classes if train.task == "classification" else None
    n_outputs = n_classes or 1
    description = {
        "format": FORMAT,
        "task": train.task,
        "classes": list(train.classes) if train.classes is not None else None,
        "n_layers": len(layers),
        "step": config.step,
        "cost": config.cost,
        "embedding": embedding.to_dict(),
        "encodings": positional_encoding(
            train.n_tokens, config.embedding.position_dim
        ).tolist(),
        "data": {
            "name": train.name,
            "source": source,
            "split_seed": config.seed,
            "test_fraction": config.test_fraction,
        },
    }

    # The head is solved on the true (unquantized) final tokens of the training set,
    # through the module itself, so that predictions match the module exactly.
    zero_head = torch.zeros(embedding.matrix.shape[1], n_outputs, dtype=torch.float64)
    model = OCTransformer(description, layers, zero_head, torch.zeros(n_outputs))
    with torch.no_grad():
        features = model.features(train.tokens, train.mask)
    weights = torch.full((len(features),), 1.0 / len(features), dtype=torch.float64)
    head = fit_head(
        features,
        torch.as_tensor(train.targets),
        weights,
        n_classes=n_classes,
        ridge=config.ridge,
    )
    return OCTransformer(description, layers, head.weight, head.bias)


@dataclass(frozen=True)
class Setup:
    """The fitted pieces of a run before solving.

    Attributes:
        embedding: the embedding into X, fitted on the training tokens.
        problem: the quantized MDP built from the training part.
        coreset_distance: W1 from the training measure to its coreset (0 without).
    """

    embedding: Embedding
    problem: QuantizedProblem
    coreset_distance: float


def build_problem(
    train_part: Dataset,
    config: TrainConfig,
    *,
    embedding: Embedding | None = None,
    codebook: StateCodebook | None = None,
    actions: ActionSet | None = None,
) -> Setup:
    """Embed, quantize and assemble the finite MDP of a training set.

    Args:
        train_part: the training sequences.
        config: the run's configuration.
        embedding, codebook, actions: fixed pieces to use instead of fitting or
            building them from ``config`` (a policy table stores them), so that
            new data are quantized exactly as the data they were fitted to.

    Returns:
        The embedding, the quantized problem and the coreset's W1 distance.
    """
    n_classes = train_part.n_classes if train_part.task == "classification" else None

    # Embedding, state codebook and (optionally) the measure coreset.
    # The run's seed is the embedding's too: one seed fixes every random choice.
    if embedding is None:
        embedding_config = dataclasses.replace(config.embedding, seed=config.seed)
        embedding = Embedding.fit(train_part.tokens, train_part.mask, embedding_config)
    tokens = embedding(train_part.tokens, train_part.mask)  # (M, n, dim)
    if codebook is None:
        codebook = build_codebook(config, tokens[train_part.mask])
    index = np.arange(len(tokens))
    counts = np.ones(len(tokens), dtype=np.int64)
    coreset_distance = 0.0
    if config.quantizer.atoms is not None:
        coreset = reduce_measure(
            tokens,
            train_part.targets,
            atoms=config.quantizer.atoms,
            n_classes=n_classes,
            radius=config.embedding.radius,
            seed=config.seed,
        )
        index, counts, coreset_distance = (
            coreset.index,
            coreset.counts,
            coreset.distance,
        )

    codes = codebook.encode(
        torch.as_tensor(tokens[index]), torch.as_tensor(train_part.mask[index])
    )
    initial = canonical_measure(
        codes.numpy().astype(codebook.code_dtype), train_part.targets[index], counts
    )

    # The finite MDP.
    position_dim = config.embedding.position_dim
    if actions is None:
        actions = build_actions(config, tokens.shape[-1], position_dim)
    encodings = torch.as_tensor(positional_encoding(train_part.n_tokens, position_dim))
    problem = QuantizedProblem(
        initial=initial,
        codebook=codebook,
        actions=actions,
        encodings=encodings,
        n_layers=config.n_layers,
        step=config.step,
        space=config.embedding.space,
        radius=config.embedding.radius,
        cost=config.cost,
        n_classes=n_classes,
        ridge=config.ridge,
        action_cost=config.action_cost,
    )
    return Setup(embedding, problem, coreset_distance)


def train(
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    progress: Progress | None = None,
    execution: ExecutionConfig | None = None,
    notes: dict[str, Any] | None = None,
    policy_table: PolicyTable | None = None,
) -> TrainResult:
    """Train a Transformer on ``dataset`` by solving the quantized control problem.

    Args:
        dataset: the whole dataset; it is split into train and test parts here.
        config: the run's configuration; defaults when None.
        progress: called as ``progress(layer, done, total)`` during the solve.
        execution: workers, backend, checkpoint directory, memory check; none of
            it changes the result. Defaults when None (serial, no checkpoint).
        notes: JSON-able facts stored in the checkpoint for a later resume (the
            command line keeps its ``--out`` there); not part of the result.
        policy_table: look the plan up in this table (``ocformer.policy``) instead
            of solving: the training part is quantized with the table's embedding,
            codebook and actions, and ``config`` (None: the table's) may differ from
            the table's only in ``seed`` and ``test_fraction``.

    Returns:
        The plan, the solver statistics, the report and the torch module.

    Raises:
        ConfigError: on options that do not fit together, or when the estimated
            peak memory of the DP exceeds the memory available (unless
            ``execution.force``).
        DataError: when ``execution.checkpoint`` holds a checkpoint of another
            problem, or the data do not fit ``policy_table`` (other sequence
            lengths, classes or token features).
    """
    execution = execution or ExecutionConfig()
    if policy_table is not None:
        config = policy_table.train_config(config, execution)
        policy_table.check_dataset(dataset)
    config = config or TrainConfig()
    started = time.perf_counter()
    n_classes = dataset.n_classes if dataset.task == "classification" else None
    check_cost(config.cost, n_classes)
    check_execution(config, execution)
    split = split_dataset(dataset, test_fraction=config.test_fraction, seed=config.seed)
    train_part = split.train

    if policy_table is None:
        setup = build_problem(train_part, config)
    else:
        setup = build_problem(
            train_part,
            config,
            embedding=policy_table.embedding,
            codebook=policy_table.codebook,
            actions=policy_table.actions,
        )
    problem = dataclasses.replace(setup.problem, device=execution.device)
    actions = problem.actions
    if policy_table is not None:
        solution = policy_table.lookup(problem)
    else:
        if config.method == "dp" and not execution.force:
            check_memory(estimate_problem(problem, config, execution))
        solution = solve_problem(problem, config, execution, progress, dataset, notes)
    layers = [actions.weights.select([a]) for a in solution.plan]
    plan = Plan(
        actions=solution.plan,
        parameters=tuple(actions.describe(a) for a in solution.plan),
        weights=tuple(layers),
        value=solution.value,
    )

    # The plan as a true (unquantized) model, and the zero-layer baseline.
    model = build_model(split.train, setup.embedding, layers, config, dataset.source)
    baseline = build_model(split.train, setup.embedding, [], config, dataset.source)
    report = make_report(
        dataset=dataset,
        split=split,
        config=config,
        solution=solution,
        plan=plan,
        model=model,
        baseline=baseline,
        codebook=problem.codebook,
        actions=actions,
        coreset_distance=setup.coreset_distance,
        n_atoms=problem.initial.n_atoms,
    )
    if policy_table is not None:
        report["policy_table"] = policy_table.describe()
    report["wall_seconds"] = round(time.perf_counter() - started, 3)
    return TrainResult(plan=plan, solution=solution, report=report, model=model)


def check_execution(config: TrainConfig, execution: ExecutionConfig) -> None:
    """Reject execution options that the chosen solver ignores."""
    ignored = execution.uses_dp_only()
    if config.method != "dp" and ignored:
        raise ConfigError(
            f"`{ignored[0]}` applies to --method dp only, got method "
            f"{config.method!r}; drop {ignored[0]} or use --method dp."
        )


def solve_problem(
    problem: QuantizedProblem,
    config: TrainConfig,
    execution: ExecutionConfig,
    progress: Progress | None,
    dataset: Dataset,
    notes: dict[str, Any] | None = None,
) -> Solution:
    """Solve with the workers and the checkpoint that ``execution`` asks for."""
    radius = config.quantizer.measure_radius
    checkpoint = None
    if execution.checkpoint is not None:
        # The recipe rebuilds the problem (and is hashed with it); the notes only
        # help a resume (execution options, the command line's --out).
        checkpoint = Checkpoint(
            execution.checkpoint,
            problem,
            measure_radius=radius,
            recipe={"config": config.to_dict(), "data": dataset.source},
            notes={"execution": dataclasses.asdict(execution), **(notes or {})},
        )
    with open_mapper(
        problem,
        backend=execution.backend,
        workers=execution.workers,
        address=execution.address,
    ) as mapper:
        return solve(
            problem,
            config.method,
            progress,
            measure_radius=radius,
            mapper=mapper,
            checkpoint=checkpoint,
        )


def estimate_problem(
    problem: QuantizedProblem, config: TrainConfig, execution: ExecutionConfig
) -> Estimate:
    """The DP's bounds for ``problem``, counting the worker processes on this
    machine (a joined Ray cluster's workers run elsewhere)."""
    if execution.backend == "ray":
        local = execution.address is None
        workers = (execution.workers or os.cpu_count() or 1) if local else 1
    else:
        workers = execution.workers or 1
    return estimate(
        problem, measure_radius=config.quantizer.measure_radius, workers=workers
    )


def estimate_run(
    dataset: Dataset,
    config: TrainConfig | None = None,
    execution: ExecutionConfig | None = None,
) -> Estimate:
    """Build the problem of a run and bound its DP, without solving (``--dry-run``).

    Raises:
        ConfigError: if the run would not use the dp solver.
    """
    config = config or TrainConfig()
    if config.method != "dp":
        raise ConfigError(
            f"`--dry-run` estimates the dp solver, got method {config.method!r}; "
            "drop --method brute (brute force holds one block of plans at a time)."
        )
    n_classes = dataset.n_classes if dataset.task == "classification" else None
    check_cost(config.cost, n_classes)
    split = split_dataset(dataset, test_fraction=config.test_fraction, seed=config.seed)
    problem = build_problem(split.train, config).problem
    return estimate_problem(problem, config, execution or ExecutionConfig())


def check_memory(bounds: Estimate) -> None:
    """Stop before solving when the estimated peak exceeds the available memory."""
    if not bounds.fits:
        raise ConfigError(
            f"the DP may need {format_bytes(bounds.peak_bytes)} of memory at its peak "
            f"(an upper bound), more than the {format_bytes(bounds.available_bytes)} "
            "available; use fewer layers, actions or atoms or a --measure-radius, "
            "see --dry-run, or pass --force to solve anyway."
        )


def make_report(
    *,
    dataset,
    split,
    config,
    solution,
    plan,
    model,
    baseline,
    codebook,
    actions,
    coreset_distance,
    n_atoms,
) -> dict[str, Any]:
    """The report's figures (``wall_seconds`` and ``model_path`` are added later)."""
    train_figures = evaluate(model, split.train, config.cost)
    test_figures = evaluate(model, split.test, config.cost)
    baseline_figures = evaluate(baseline, split.test, config.cost)

    report: dict[str, Any] = {
        "method": solution.method,
        "data": dataset.name,
        "task": dataset.task,
        "cost": config.cost,
        "layers": config.n_layers,
        "n_train": split.train.n_sequences,
        "n_test": split.test.n_sequences,
        "quantized_value": solution.value,
        "train_loss": train_figures["loss"],
        "test_loss": test_figures["loss"],
    }
    if "accuracy" in test_figures:
        report["train_accuracy"] = train_figures["accuracy"]
        report["test_accuracy"] = test_figures["accuracy"]
    report["baseline_no_layers"] = {
        "test_loss": baseline_figures["loss"],
        **(
            {"test_accuracy": baseline_figures["accuracy"]}
            if "accuracy" in baseline_figures
            else {}
        ),
    }
    report["radii"] = {
        "state": codebook.radius,
        "state_data": codebook.data_radius,
        "measure": coreset_distance,
        "measure_net": config.quantizer.measure_radius,
        "action": actions.covering_radius,
    }
    report["counts"] = {
        "states_expanded": solution.states_expanded,
        "transitions": solution.transitions,
        "terminal_evaluations": solution.terminal_evaluations,
        "states_per_layer": list(solution.states_per_layer),
        "represented": solution.represented,
        "actions": len(actions),
        "codes": codebook.size,
        "atoms": n_atoms,
    }
    report["plan"] = [
        {"layer": t, "action": a, "parameters": p}
        for t, (a, p) in enumerate(zip(plan.actions, plan.parameters, strict=True))
    ]
    report["config"] = config.to_dict()
    report["model_path"] = None
    return report
