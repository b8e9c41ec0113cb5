"""What one would use instead of the exact DP, on the same model and action set.

Every method here trains the model ``ocformer train`` trains: the fixed embedding, T
layers of the particle system, mean pooling and the closed-form ridge head. They
differ only in how the layer weights are chosen:

- `fit_adam`: Adam (full batch) on the true model's training cost, over the complete
  layer weights (``space="weights"``, unconstrained) or over the five layer-family
  parameters inside the grid's box (``space="family"``: the compact action set A
  that the grid quantizes). Given ``actions``, every forward pass uses the nearest
  action of that finite set and the gradient passes straight through to the
  continuous weights (quantization-aware training with a straight-through
  estimator).
- `fit_cma`: CMA-ES (the ``cma`` package) over the family parameters in the box.
- `nearest_actions`: continuous layers projected onto the finite set, nearest in the
  weight metric (post-training quantization).
- `random_plans`: the best of seeded random plans of the finite set, on the quantized
  model.
- `plan_value`: the cost of any plan on the quantized model.

Adam minimises the squared error (onto one-hot classes for classification), the usual
smooth surrogate when the chosen cost is the 0-1 error; CMA-ES needs no gradient and
minimises the chosen cost itself. An *evaluation* is one layer applied to the whole
training set (a DP transition applies one layer to a whole quantized measure), so a
forward pass through T layers counts T; backward passes are not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ocformer.actions import PARAMETERS, ActionSet, family_tensors, grid_values
from ocformer.config import TrainConfig
from ocformer.cost import fit_head, loss, readout, targets_matrix
from ocformer.data import Dataset
from ocformer.dynamics import WEIGHT_NAMES, LayerWeights
from ocformer.embedding import Embedding
from ocformer.errors import ConfigError
from ocformer.mdp import QuantizedProblem
from ocformer.model import encoder_step
from ocformer.solver import plan_values
from ocformer.train import build_actions, build_model

SPACES = ("weights", "family")
# Standard deviation of the noise added to the starting action of `fit_adam` in the
# weight space, so that seeds start from different points.
START_NOISE = 0.1
# Threshold of the MLP soft threshold in the grid family (`grid_actions`' default).
THRESHOLD = 0.25


@dataclass(frozen=True)
class Fit:
    """Continuous layer weights found by a baseline.

    Attributes:
        layers: one single-action ``LayerWeights`` per layer.
        train_cost: the objective at ``layers``: the true model's training cost with
            its closed-form head (squared error for Adam, the chosen cost for CMA-ES).
        evaluations: layers applied to the whole training set.
        seconds: wall time of the fit.
        parameters: float64 array of shape (n_layers, 5), the family parameters of
            each layer (columns in the order of ``actions.PARAMETERS``), or None for
            fits in the weight space.
    """

    layers: tuple[LayerWeights, ...]
    train_cost: float
    evaluations: int
    seconds: float
    parameters: np.ndarray | None = None


class Objective:
    """The true model's training cost as a function of its layer weights.

    The embedded training tokens are computed once; each call runs the layers, pools,
    solves the closed-form head (differentiably) and returns its weighted loss, so
    gradients flow back to the weights.

    Args:
        train: the training sequences.
        embedding: the fitted embedding into X.
        config: the run's configuration (step, X, ridge, cost, positional size).
    """

    def __init__(self, train: Dataset, embedding: Embedding, config: TrainConfig):
        self.config = config
        self.n_classes = train.n_classes if train.task == "classification" else None
        empty = build_model(train, embedding, [], config, None)
        self.mask = torch.as_tensor(train.mask)
        with torch.no_grad():
            self.start = empty.embed(torch.as_tensor(train.tokens), self.mask)
        self.encodings = empty.encodings
        self.targets = torch.as_tensor(train.targets)
        self.weights = torch.full(
            (train.n_sequences,), 1.0 / train.n_sequences, dtype=torch.float64
        )
        self.calls = 0

    def __call__(self, layers: Sequence[LayerWeights], kind: str = "mse"):
        """The cost (a 0-dim tensor) of ``layers`` under loss ``kind``."""
        self.calls += len(layers)
        state = self.start
        for layer in layers:
            state = encoder_step(
                state,
                self.encodings,
                self.mask,
                **{name: getattr(layer, name)[0] for name in WEIGHT_NAMES},
                step=self.config.step,
                space=self.config.embedding.space,
                radius=self.config.embedding.radius,
            )
        features = readout(state, self.mask)
        head = fit_head(
            features,
            self.targets,
            self.weights,
            n_classes=self.n_classes,
            ridge=self.config.ridge,
        )
        outputs = head(features)
        if kind == "error":
            return torch.tensor(
                loss(
                    outputs,
                    self.targets,
                    self.weights,
                    kind="error",
                    n_classes=self.n_classes,
                )
            )
        response = outputs - targets_matrix(self.targets, self.n_classes)
        return (self.weights * response.square().sum(dim=1)).sum()


@dataclass(frozen=True)
class Box:
    """The grid family's parameter box: the compact action set the grid quantizes.

    Attributes:
        lows, highs: float64 arrays of shape (5,), per parameter of ``PARAMETERS``.
    """

    lows: np.ndarray
    highs: np.ndarray

    @classmethod
    def of(cls, config: TrainConfig) -> Box:
        """The box spanned by the grid of ``config`` (its smallest and largest values).

        Raises:
            ConfigError: when the action family is not the grid.
        """
        if config.actions.family != "grid":
            raise ConfigError(
                "searching the layer family's parameters needs the grid family, got "
                f"family {config.actions.family!r}; use --family grid, or methods "
                "that stay in the weight space."
            )
        values = grid_values(config.actions.grid or {})
        lows = np.array([min(values[name]) for name in PARAMETERS])
        highs = np.array([max(values[name]) for name in PARAMETERS])
        return cls(lows, highs)

    @property
    def free(self) -> np.ndarray:
        """Indices of the parameters with a range (the others stay fixed)."""
        return np.flatnonzero(self.highs > self.lows)

    def parameters(self, unit: torch.Tensor) -> torch.Tensor:
        """Family parameters (n_layers, 5) of points (n_layers, n_free) in [0, 1]."""
        lows = torch.as_tensor(self.lows)
        spans = torch.as_tensor(self.highs - self.lows)
        columns = [lows[i].expand(len(unit)) for i in range(len(PARAMETERS))]
        for column, index in enumerate(self.free):
            columns[index] = lows[index] + spans[index] * unit[:, column]
        return torch.stack(columns, dim=1)


def _family_layers(
    box: Box, unit: torch.Tensor, embedding: Embedding, config: TrainConfig
) -> tuple[torch.Tensor, list[LayerWeights]]:
    """Family parameters and one layer per row of ``unit`` (n_layers, n_free)."""
    parameters = box.parameters(unit)
    weights = family_tensors(
        parameters,
        dim=embedding.dim,
        position_dim=config.embedding.position_dim,
        threshold=THRESHOLD,
    )
    return parameters, [weights.select(t) for t in range(len(unit))]


def fit_adam(
    train: Dataset,
    embedding: Embedding,
    config: TrainConfig,
    *,
    seed: int,
    steps: int = 200,
    learning_rate: float = 0.05,
    space: str = "weights",
    actions: ActionSet | None = None,
) -> Fit:
    """Train the layers with Adam on the whole training set.

    Args:
        train: the training sequences.
        embedding: the fitted embedding into X.
        config: the run's configuration; ``n_layers`` layers are trained.
        seed: seed of the starting point.
        steps: Adam steps, each one full-batch forward and backward pass.
        learning_rate: Adam's step size (on weights, or on the unit box of the
            family parameters).
        space: ``"weights"``: all weights, starting from a seeded random action of
            the configured action set plus Gaussian noise; ``"family"``: the five
            family parameters kept inside the grid's box (``p = low + span *
            sigmoid(u)``), starting from a seeded uniform point of the box.
        actions: when given, train through the nearest action of this finite set
            with a straight-through gradient (``space="weights"`` only).

    Returns:
        The final (continuous) layers and their training cost.

    Raises:
        ConfigError: on an unknown space, a bad number of steps or learning rate,
            or a family fit without the grid family.
    """
    if space not in SPACES:
        raise ConfigError(
            f"`space` must be one of {', '.join(SPACES)}, got {space!r}; use weights "
            "(all layer weights) or family (the grid family's parameters)."
        )
    if steps < 1:
        raise ConfigError(f"`steps` must be >= 1, got {steps}; use e.g. 200.")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(
            f"`learning_rate` must be a positive number, got {learning_rate}; use "
            "e.g. 0.05."
        )
    if actions is not None and space != "weights":
        raise ConfigError(
            "straight-through training into `actions` works in the weight space, got "
            f"space {space!r}; use space='weights'."
        )
    started = time.perf_counter()
    objective = Objective(train, embedding, config)
    generator = torch.Generator().manual_seed(seed)
    n_layers = config.n_layers

    if space == "family":
        box = Box.of(config)
        start = torch.rand(
            n_layers, len(box.free), generator=generator, dtype=torch.float64
        )
        # Inside (0, 1), so that the logit is finite.
        logits = torch.logit(start.clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=learning_rate)
        for _ in range(steps):
            optimizer.zero_grad()
            unit = torch.sigmoid(logits)
            objective(_family_layers(box, unit, embedding, config)[1]).backward()
            optimizer.step()
        with torch.no_grad():
            unit = torch.sigmoid(logits)
            parameters, layers = _family_layers(box, unit, embedding, config)
        return _finish(objective, layers, started, parameters.detach().numpy())

    # Start from seeded random actions of the configured set, plus noise.
    template = build_actions(
        config, embedding.dim, config.embedding.position_dim
    ).weights
    picks = torch.randint(len(template), (n_layers,), generator=generator)
    weights = []
    for pick in picks.tolist():
        layer = {}
        for name in WEIGHT_NAMES:
            tensor = getattr(template, name)[pick : pick + 1]
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            layer[name] = (tensor + START_NOISE * noise).requires_grad_(True)
        weights.append(layer)

    optimizer = torch.optim.Adam(
        [tensor for layer in weights for tensor in layer.values()], lr=learning_rate
    )
    for _ in range(steps):
        optimizer.zero_grad()
        layers = [LayerWeights(**layer) for layer in weights]
        if actions is not None:
            layers = [_straight_through(layer, actions) for layer in layers]
        objective(layers).backward()
        optimizer.step()
    layers = [LayerWeights(**layer) for layer in weights]
    return _finish(objective, layers, started, None)


def _finish(
    objective: Objective,
    layers: Sequence[LayerWeights],
    started: float,
    parameters: np.ndarray | None,
    kind: str = "mse",
) -> Fit:
    """The fit of ``layers``, detached, with their final cost."""
    layers = tuple(
        LayerWeights(**{n: getattr(w, n).detach().clone() for n in WEIGHT_NAMES})
        for w in layers
    )
    with torch.no_grad():
        cost = float(objective(layers, kind))
    return Fit(
        layers=layers,
        train_cost=cost,
        evaluations=objective.calls,
        seconds=time.perf_counter() - started,
        parameters=parameters,
    )


def _straight_through(layer: LayerWeights, actions: ActionSet) -> LayerWeights:
    """The nearest action's weights forward, the identity backward."""
    (index,) = nearest_actions([layer], actions)
    chosen = actions.weights.select(index)
    return LayerWeights(
        **{
            name: getattr(layer, name)
            + (getattr(chosen, name) - getattr(layer, name)).detach()
            for name in WEIGHT_NAMES
        }
    )


def nearest_actions(
    layers: Sequence[LayerWeights], actions: ActionSet
) -> tuple[int, ...]:
    """The action of ``actions`` nearest to each layer in the weight metric.

    The weight metric is the Frobenius norm of the difference of the flattened
    weights (``LayerWeights.flatten``); ties go to the lowest action index.

    Args:
        layers: single-action layer weights, shaped like the actions.

    Returns:
        One action index per layer.
    """
    if not layers:
        return ()
    points = torch.cat([layer.flatten().detach() for layer in layers])  # (T, W)
    distances = torch.cdist(
        points, actions.weights.flatten(), compute_mode="donot_use_mm_for_euclid_dist"
    )  # (T, L)
    return tuple(int(index) for index in distances.argmin(dim=1))


def fit_cma(
    train: Dataset,
    embedding: Embedding,
    config: TrainConfig,
    *,
    seed: int,
    evaluations: int = 600,
    sigma: float = 0.3,
) -> Fit:
    """Minimise the true model's training cost by CMA-ES over the family parameters.

    The search runs on the unit cube of the grid's box (``n_layers`` times the
    parameters with a range), bounded to it, from a seeded uniform start, and
    minimises ``config.cost`` itself (the 0-1 error included: no gradient is
    needed). ``cma`` takes seed 0 to mean "from the clock", so it gets ``seed + 1``.

    Args:
        train: the training sequences.
        embedding: the fitted embedding into X.
        config: the run's configuration (the grid family).
        seed: seed of the start and of the search.
        evaluations: the most candidate plans evaluated (each ``n_layers``
            layer applications).
        sigma: the initial step size on the unit cube.

    Returns:
        The best layers found and their cost.

    Raises:
        ConfigError: without the grid family, or with a bad budget or step size.
    """
    import cma

    if evaluations < 1:
        raise ConfigError(
            f"`evaluations` must be >= 1, got {evaluations}; use e.g. 600."
        )
    if not (math.isfinite(sigma) and 0 < sigma <= 1):
        raise ConfigError(f"`sigma` must be in (0, 1], got {sigma}; use 0.3.")
    started = time.perf_counter()
    box = Box.of(config)
    objective = Objective(train, embedding, config)
    n_layers, n_free = config.n_layers, len(box.free)

    def cost(point: np.ndarray) -> float:
        unit = torch.as_tensor(np.asarray(point, dtype=np.float64)).reshape(
            n_layers, n_free
        )
        with torch.no_grad():
            layers = _family_layers(box, unit, embedding, config)[1]
            return float(objective(layers, config.cost))

    start = np.random.default_rng(seed).random(n_layers * n_free)
    options = {
        "seed": seed + 1,
        "bounds": [0.0, 1.0],
        "maxfevals": evaluations,
        "verbose": -9,
        "verb_disp": 0,
        "verb_log": 0,
    }
    strategy = cma.CMAEvolutionStrategy(start, sigma, options)
    while not strategy.stop():
        candidates = strategy.ask()
        strategy.tell(candidates, [cost(point) for point in candidates])
    best = np.asarray(strategy.result.xbest, dtype=np.float64)
    unit = torch.as_tensor(best).reshape(n_layers, n_free)
    with torch.no_grad():
        parameters, layers = _family_layers(box, unit, embedding, config)
    return _finish(objective, layers, started, parameters.numpy(), config.cost)


def plan_value(problem: QuantizedProblem, plan: Sequence[int]) -> float:
    """The cost of ``plan`` on the quantized model.

    ``sum_t c(a_t) + C_T(Lambda_T)``, rolled out from the problem's initial measure
    and accumulated from the last layer backwards as the solvers do, so that the DP's
    own plan gets exactly its value.

    Raises:
        ConfigError: if the plan's length is not ``n_layers`` or an action is out of
            range.
    """
    return plan_values(problem, [tuple(plan)])[0]


@dataclass(frozen=True)
class RandomSearch:
    """The best of random plans on the quantized model.

    Attributes:
        plan: the best plan drawn (the first drawn among equals).
        value: its quantized cost.
        n_plans: plans drawn.
        evaluations: transitions, ``n_plans * n_layers``.
        seconds: wall time.
    """

    plan: tuple[int, ...]
    value: float
    n_plans: int
    evaluations: int
    seconds: float


def random_plans(problem: QuantizedProblem, *, n_plans: int, seed: int) -> RandomSearch:
    """Draw ``n_plans`` uniform random plans (with replacement) and keep the best.

    Raises:
        ConfigError: if ``n_plans`` < 1.
    """
    if n_plans < 1:
        raise ConfigError(f"`n_plans` must be >= 1, got {n_plans}; draw at least one.")
    started = time.perf_counter()
    draws = np.random.default_rng(seed).integers(
        problem.n_actions, size=(n_plans, problem.n_layers)
    )
    plans = [tuple(int(a) for a in row) for row in draws]
    values = plan_values(problem, plans)
    best = int(np.argmin(values))
    return RandomSearch(
        plan=plans[best],
        value=values[best],
        n_plans=n_plans,
        evaluations=n_plans * problem.n_layers,
        seconds=time.perf_counter() - started,
    )
