"""Finite action sets: the layer weights dynamic programming chooses from.

The action space of a layer is compact but continuous; DP needs a finite set of L weight
sets instead (DESIGN.md, section 3). Three families are offered:

- `grid_actions`: a grid over a five-parameter layer family (`family_weights`),
- `ternary_actions`: a few chosen weight entries set to {-scale, 0, scale},
- `load_codebook`: any weight sets saved to a safetensors file.

Each set carries its covering radius r_action in the weight metric: the Frobenius norm
of the difference of two actions' flattened weights (`LayerWeights.flatten`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ocformer.dynamics import WEIGHT_NAMES, LayerWeights
from ocformer.errors import ConfigError, DataError

PARAMETERS = ("temperature", "position", "value_gain", "angle", "mlp_gain")
# 32 actions. A strong positional weight lets a layer tell early tokens from late
# ones, and both signs of the value and MLP gains let it add or subtract.
DEFAULT_GRID: Mapping[str, tuple[float, ...]] = {
    "temperature": (0.0, 2.0),
    "position": (-8.0, 8.0),
    "value_gain": (-1.0, 1.0),
    "angle": (0.0, math.pi / 2),
    "mlp_gain": (-2.0, 2.0),
}
DEFAULT_BASE: Mapping[str, float] = {
    "temperature": 1.0,
    "position": 2.0,
    "value_gain": 1.0,
    "angle": 0.0,
    "mlp_gain": 1.0,
}
COVERING_SAMPLES = 4096
MAX_TERNARY_ENTRIES = 8
_ENTRY = re.compile(r"^\s*(\w+)\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]\s*$")


@dataclass(frozen=True, eq=False)
class ActionSet:
    """A finite set of L layer weight sets, with where each came from.

    Attributes:
        weights: LayerWeights with L actions.
        parameters: float64 array of shape (L, n_parameters), each action's coordinates
            in its family (grid parameters, ternary entry values, codebook columns).
        parameter_names: the n_parameters column names.
        covering_radius: r_action in the weight metric.
        family: "grid", "ternary" or "codebook".
    """

    weights: LayerWeights
    parameters: np.ndarray
    parameter_names: tuple[str, ...]
    covering_radius: float
    family: str

    def __post_init__(self) -> None:
        expected = (len(self.weights), len(self.parameter_names))
        if self.parameters.shape != expected:
            raise ConfigError(
                f"`parameters` must have shape {expected} (actions, parameter names), "
                f"got {self.parameters.shape}; give one row per action."
            )

    def __len__(self) -> int:
        return len(self.weights)

    def describe(self, index: int) -> dict[str, float]:
        """Return {parameter name: value} of action `index`."""
        row = self.parameters[index]
        return {
            name: float(value)
            for name, value in zip(self.parameter_names, row, strict=True)
        }

    def norms(self) -> np.ndarray:
        """Return the Frobenius norm of each action's weights, shape (L,)."""
        return torch.linalg.vector_norm(self.weights.flatten(), dim=1).numpy()


def family_weights(
    parameters: np.ndarray, *, dim: int, position_dim: int, threshold: float = 0.25
) -> LayerWeights:
    """Map rows of the five family parameters to full layer weights.

    With key_dim = dim + position_dim and s = key_dim ** 0.25 (so that s**2 cancels
    the score's 1 / sqrt(key_dim)):

        query = s * blockdiag(sqrt(temperature) I, sqrt(|position|) I)
        key   = s * blockdiag(sqrt(temperature) I, sign(position) sqrt(|position|) J)
        score(i, j) = temperature <x_i, x_j> + position <e_i, J e_j>

    J is block-diagonal in 2x2 quarter turns [[0, -1], [1, 0]]. For the encodings
    (cos, sin)(pi k p / n) it gives <e_p, J e_q> = sum_k sin(pi k (p - q) / n),
    which is odd in p - q: the score tells a token before from one after, so order
    matters. Then value = value_gain * R(angle), with R the rotation by `angle` in the
    plane of the first two coordinates, and the MLP is a scaled soft threshold,

        mlp(y) = mlp_gain * sign(y) * max(|y| - threshold, 0)   coordinate-wise,

    from mlp_in = [I; -I], mlp_bias = -threshold and mlp_out = mlp_gain [I, -I].

    Args:
        parameters: float array of shape (L, 5) (or (5,) for one action), columns in
            the order of `PARAMETERS`.
        dim: token dimension d, >= 1.
        position_dim: positional encoding dimension, even and >= 2.
        threshold: soft-threshold level of the MLP, >= 0.

    Returns:
        float64 LayerWeights with L actions, key_dim = dim + position_dim and
        hidden = 2 * dim.

    Raises:
        ConfigError: on a bad shape, a negative temperature, an angle other than 0 when
            dim is 1, or bad dimensions.
    """
    rows = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
    _check_family_arguments(rows, dim, position_dim, threshold)
    return family_tensors(
        torch.from_numpy(rows), dim=dim, position_dim=position_dim, threshold=threshold
    )


def family_tensors(
    table: torch.Tensor, *, dim: int, position_dim: int, threshold: float = 0.25
) -> LayerWeights:
    """`family_weights` on a float64 tensor of shape (L, 5), differentiably.

    No argument is checked here (`family_weights` checks them). Gradients flow to
    `table` wherever the weights are differentiable, which excludes a temperature or
    a position of exactly 0 (their square roots).
    """
    temperature, position, value_gain, angle, mlp_gain = table.T  # each (L,)
    actions, key_dim = len(table), dim + position_dim
    scale = key_dim**0.25

    def blocks(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        matrix = torch.zeros(actions, key_dim, key_dim, dtype=torch.float64)
        matrix[:, :dim, :dim] = tokens
        matrix[:, dim:, dim:] = positions
        return matrix

    eye, eye_positions = _eye(dim), _eye(position_dim)
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    turn = torch.kron(_eye(position_dim // 2), quarter_turn)
    token_gain = (scale * temperature.sqrt())[:, None, None]
    position_gain = (scale * position.abs().sqrt())[:, None, None]
    query = blocks(token_gain * eye, position_gain * eye_positions)
    key = blocks(
        token_gain * eye, position.sign()[:, None, None] * position_gain * turn
    )

    # Rotation in the plane of the first two coordinates; dim 1 only allows angle 0.
    rotation = eye.repeat(actions, 1, 1)
    if dim >= 2:
        rotation[:, 0, 0], rotation[:, 0, 1] = angle.cos(), -angle.sin()
        rotation[:, 1, 0], rotation[:, 1, 1] = angle.sin(), angle.cos()
    value = value_gain[:, None, None] * rotation

    mlp_in = torch.cat([eye, -eye], dim=0).repeat(actions, 1, 1)  # (L, 2 dim, dim)
    mlp_bias = torch.full((actions, 2 * dim), -float(threshold), dtype=torch.float64)
    mlp_out = mlp_gain[:, None, None] * torch.cat([eye, -eye], dim=1)  # (L, dim, 2 dim)
    return LayerWeights(query, key, value, mlp_in, mlp_bias, mlp_out)


def _eye(size: int) -> torch.Tensor:
    return torch.eye(size, dtype=torch.float64)


def _check_family_arguments(
    rows: np.ndarray, dim: int, position_dim: int, threshold: float
) -> None:
    """Raise a ConfigError for the first bad argument of `family_weights`."""
    if dim < 1:
        raise ConfigError(f"`dim` must be >= 1, got {dim}; use at least one feature.")
    if position_dim < 2 or position_dim % 2:
        raise ConfigError(
            f"`position_dim` must be even and >= 2, got {position_dim}; encodings come "
            "in (cos, sin) pairs."
        )
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ConfigError(f"`threshold` must be >= 0, got {threshold}; use e.g. 0.25.")
    if rows.ndim != 2 or rows.shape[1] != len(PARAMETERS):
        raise ConfigError(
            f"`parameters` must have shape (L, {len(PARAMETERS)}) with columns "
            f"{', '.join(PARAMETERS)}, got {rows.shape}; give one row per action."
        )
    if not np.isfinite(rows).all():
        raise ConfigError("`parameters` must be finite, got NaN or inf; fix the grid.")

    temperature, angle = rows[:, 0], rows[:, PARAMETERS.index("angle")]
    if (temperature < 0).any():
        raise ConfigError(
            f"`temperature` must be >= 0, got {temperature.min()}; a negative "
            "temperature has no square root in the query and key."
        )
    if dim == 1 and (angle != 0).any():
        raise ConfigError(
            f"`angle` must be 0 when dim is 1, got {angle[angle != 0][0]}; there is no "
            "plane to rotate in: use angle values (0.0,) or dim >= 2."
        )


def grid_actions(
    *,
    dim: int,
    position_dim: int,
    grid: Mapping[str, Sequence[float]] | None = None,
    threshold: float = 0.25,
    seed: int = 0,
    identity: bool = True,
) -> ActionSet:
    """Build the product grid over the layer family of `family_weights`.

    Actions come in lexicographic product order of `PARAMETERS`, the first name
    varying slowest. With ``identity`` the identity layer (all five parameters 0:
    value and MLP gains 0 leave every token where it is) comes first, as action 0,
    unless the grid already holds a layer with both gains 0. A layer that cannot
    lower the quantized cost then ties with it, and ties go to the lowest action, so
    the plan does not move tokens without a reason. The covering radius is a Monte
    Carlo estimate *from below*: the largest weight distance from any of 4096 seeded
    uniform samples of the grid's bounding box (a parameter with one value stays
    fixed) to its nearest action.

    Args:
        dim: token dimension d.
        position_dim: positional encoding dimension.
        grid: values per parameter name; missing names take `DEFAULT_GRID`'s.
        threshold: soft-threshold level of the MLP.
        seed: seed of the covering-radius samples.
        identity: put the identity layer first.

    Returns:
        ActionSet of family "grid": the product of the value counts, plus one for
        the identity layer when it is added.

    Raises:
        ConfigError: on an unknown parameter name, an empty or repeated value list, or
            values `family_weights` rejects.

    Example:
        >>> len(grid_actions(dim=2, position_dim=2))
        33
    """
    values = grid_values(grid or {})
    axes = np.meshgrid(*values.values(), indexing="ij")
    parameters = np.stack([axis.reshape(-1) for axis in axes], axis=1)  # (L, 5)
    gains = parameters[
        :, [PARAMETERS.index("value_gain"), PARAMETERS.index("mlp_gain")]
    ]
    if identity and not (gains == 0).all(axis=1).any():
        parameters = np.vstack([np.zeros(len(PARAMETERS)), parameters])
    weights = family_weights(
        parameters, dim=dim, position_dim=position_dim, threshold=threshold
    )

    lows = np.array([min(row) for row in values.values()])
    highs = np.array([max(row) for row in values.values()])
    uniform = np.random.default_rng(seed).random((COVERING_SAMPLES, len(PARAMETERS)))
    samples = family_weights(
        lows + (highs - lows) * uniform,
        dim=dim,
        position_dim=position_dim,
        threshold=threshold,
    )
    radius = _largest_nearest_distance(samples.flatten(), weights.flatten())
    return ActionSet(weights, parameters, PARAMETERS, radius, "grid")


def grid_values(grid: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, ...]]:
    """Merge `grid` into `DEFAULT_GRID`, checking every name and value list."""
    unknown = sorted(set(grid) - set(PARAMETERS))
    if unknown:
        raise ConfigError(
            f"`grid` has unknown parameter {unknown[0]!r}; use names from "
            f"{', '.join(PARAMETERS)}."
        )
    merged = {}
    for name in PARAMETERS:
        given = grid.get(name, DEFAULT_GRID[name])
        try:
            row = tuple(float(value) for value in given)
        except TypeError:
            raise ConfigError(
                f"`grid[{name!r}]` must be a sequence of numbers, got {given!r}; "
                f"write e.g. ({given},)."
            ) from None
        if not row or len(set(row)) != len(row):
            raise ConfigError(
                f"`grid[{name!r}]` must hold at least one value and no repeats, got "
                f"{row}; list each value once."
            )
        merged[name] = row
    return merged


def ternary_actions(
    *,
    dim: int,
    position_dim: int,
    entries: Sequence[str] | None = None,
    scale: float = 1.0,
    base: Mapping[str, float] | None = None,
    threshold: float = 0.25,
) -> ActionSet:
    """Set a few weight entries of one base layer to every value in {-scale, 0, scale}.

    The base layer is `family_weights` at `base` (missing names take `DEFAULT_BASE`).
    Each entry, written like "value[0, 1]" or "mlp_bias[3]" (a weight name of
    LayerWeights and one index per axis after the action axis), is replaced by -scale,
    0 or scale; the L = 3**k actions come in product order, the first entry varying
    slowest. The k entries span the box [-scale, scale]^k in the weight metric, so the
    covering radius is exact: (scale / 2) * sqrt(k).

    Args:
        dim: token dimension d.
        position_dim: positional encoding dimension.
        entries: the k weight entries to vary, 1 <= k <= 8; by default the first
            min(dim, 3) diagonal entries of `value`.
        scale: the nonzero magnitude, > 0.
        base: family parameters of the base layer.
        threshold: soft-threshold level of the base layer's MLP.

    Returns:
        ActionSet of family "ternary"; parameters are the entry values, shape (L, k).

    Raises:
        ConfigError: on a bad or repeated entry, more than 8 entries, a bad scale or an
            unknown base parameter.
    """
    if entries is None:
        entries = [f"value[{axis}, {axis}]" for axis in range(min(dim, 3))]
    entries = tuple(entries)
    if not 1 <= len(entries) <= MAX_TERNARY_ENTRIES:
        raise ConfigError(
            f"`entries` must name 1 to {MAX_TERNARY_ENTRIES} weight entries, got "
            f"{len(entries)}; 3**k actions grow fast, so choose fewer entries."
        )
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"`scale` must be a positive number, got {scale}; use 1.0.")
    unknown = sorted(set(base or {}) - set(PARAMETERS))
    if unknown:
        raise ConfigError(
            f"`base` has unknown parameter {unknown[0]!r}; use names from "
            f"{', '.join(PARAMETERS)}."
        )

    merged = {**DEFAULT_BASE, **(base or {})}
    row = np.array([[merged[name] for name in PARAMETERS]], dtype=np.float64)
    template = family_weights(
        row, dim=dim, position_dim=position_dim, threshold=threshold
    )
    locations = [_parse_entry(entry, template) for entry in entries]
    if len(set(locations)) != len(locations):
        raise ConfigError(
            f"`entries` must not repeat a weight entry, got {list(entries)}; list each "
            "entry once."
        )

    levels = np.array([-scale, 0.0, scale])
    axes = np.meshgrid(*[levels] * len(entries), indexing="ij")
    parameters = np.stack([axis.reshape(-1) for axis in axes], axis=1)  # (L, k)
    actions = len(parameters)
    tensors = {
        name: tensor.repeat(actions, *[1] * (tensor.ndim - 1))
        for name, tensor in template.to_tensors().items()
    }
    for column, (name, index) in enumerate(locations):
        tensors[name][(slice(None), *index)] = torch.from_numpy(parameters[:, column])

    radius = (scale / 2) * math.sqrt(len(entries))
    weights = LayerWeights.from_tensors(tensors)
    return ActionSet(weights, parameters, entries, radius, "ternary")


def _parse_entry(entry: str, template: LayerWeights) -> tuple[str, tuple[int, ...]]:
    """Turn "value[0, 1]" into ("value", (0, 1)), checked against `template`."""
    match = _ENTRY.match(entry)
    if match is None or match.group(1) not in WEIGHT_NAMES:
        raise ConfigError(
            f"`entries` item {entry!r} must look like 'value[0, 1]': a weight name "
            f"from {', '.join(WEIGHT_NAMES)} and one index per axis."
        )
    name = match.group(1)
    index = tuple(int(part) for part in match.group(2).split(","))
    shape = tuple(getattr(template, name).shape[1:])
    if len(index) != len(shape) or any(
        i >= n for i, n in zip(index, shape, strict=True)
    ):
        raise ConfigError(
            f"`entries` item {entry!r} does not fit `{name}` of shape {shape}; give "
            f"{len(shape)} indices, each below its axis size."
        )
    return name, index


def save_codebook(action_set: ActionSet, path: str | Path) -> None:
    """Write an action set to a safetensors file that `load_codebook` reads.

    Args:
        action_set: the actions to store.
        path: destination file, usually ending in .safetensors.
    """
    tensors = {
        name: tensor.detach().to(torch.float64).contiguous().clone()
        for name, tensor in action_set.weights.to_tensors().items()
    }
    tensors["parameters"] = torch.from_numpy(np.array(action_set.parameters))
    metadata = {"parameter_names": json.dumps(list(action_set.parameter_names))}
    save_file(tensors, str(path), metadata=metadata)


def load_codebook(path: str | Path, *, dim: int, position_dim: int) -> ActionSet:
    """Read weight sets saved by `save_codebook` (or written by hand).

    The file holds the six LayerWeights tensors with the action axis first and an
    optional `parameters` tensor of shape (L, P). The covering radius is a Monte Carlo
    estimate from below, as for the grid: 4096 seeded uniform samples of the bounding
    box of the codebook's flattened weights, each to its nearest action.

    Args:
        path: the safetensors file.
        dim: token dimension d the weights must fit.
        position_dim: positional encoding dimension the weights must fit.

    Returns:
        ActionSet of family "codebook", float64.

    Raises:
        DataError: if the file cannot be read, misses a tensor, or a shape does not fit
            `dim` and `position_dim`.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as error:
        raise DataError(
            f"cannot read codebook {path}: {error}; write it with save_codebook."
        ) from None
    missing = [name for name in WEIGHT_NAMES if name not in tensors]
    if missing:
        raise DataError(
            f"codebook {path} has no tensor `{missing[0]}`; a codebook holds "
            f"{', '.join(WEIGHT_NAMES)}, as written by save_codebook."
        )

    _check_codebook_shapes(tensors, path, dim, position_dim)
    weights = LayerWeights.from_tensors(
        {name: tensors[name].to(torch.float64) for name in WEIGHT_NAMES}
    )
    parameters, names = _codebook_parameters(tensors, metadata, len(weights), path)

    flat = weights.flatten()  # (L, n_weights)
    lows, highs = flat.min(dim=0).values, flat.max(dim=0).values
    uniform = torch.from_numpy(
        np.random.default_rng(0).random((COVERING_SAMPLES, flat.shape[1]))
    )
    radius = _largest_nearest_distance(lows + (highs - lows) * uniform, flat)
    return ActionSet(weights, parameters, names, radius, "codebook")


def _check_codebook_shapes(
    tensors: Mapping[str, torch.Tensor], path: str | Path, dim: int, position_dim: int
) -> None:
    """Raise a DataError naming the first tensor whose shape does not fit."""
    features = dim + position_dim
    patterns = {
        "query": ("L", "key_dim", features),
        "key": ("L", "key_dim", features),
        "value": ("L", dim, dim),
        "mlp_in": ("L", "hidden", dim),
        "mlp_bias": ("L", "hidden"),
        "mlp_out": ("L", dim, "hidden"),
    }
    # Free sizes (actions, key_dim, hidden) are fixed by the first tensor that has them.
    sizes: dict[str, int] = {}
    for name, pattern in patterns.items():
        shape = tuple(tensors[name].shape)
        if len(shape) == len(pattern):
            for symbol, size in zip(pattern, shape, strict=True):
                if isinstance(symbol, str):
                    sizes.setdefault(symbol, size)
        expected = tuple(sizes.get(s, s) if isinstance(s, str) else s for s in pattern)
        if shape != expected:
            raise DataError(
                f"codebook tensor `{name}` has shape {_render(shape)} but dim={dim}, "
                f"position_dim={position_dim} need {_render(expected)}; save a "
                "codebook for this dim and position_dim."
            )
    if sizes["L"] == 0:
        raise DataError(f"codebook {path} holds no actions; save at least one.")


def _codebook_parameters(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    actions: int,
    path: str | Path,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return the codebook's (L, P) parameters and their names ((L, 0) if absent)."""
    if "parameters" not in tensors:
        return np.zeros((actions, 0)), ()
    parameters = tensors["parameters"].to(torch.float64).numpy()
    if parameters.ndim != 2 or parameters.shape[0] != actions:
        raise DataError(
            f"codebook tensor `parameters` has shape {_render(parameters.shape)} but "
            f"the codebook holds {actions} actions; store one row per action in {path}."
        )
    try:
        names = tuple(json.loads(metadata.get("parameter_names", "null")))
    except (TypeError, ValueError):
        names = ()
    if len(names) != parameters.shape[1] or not all(isinstance(n, str) for n in names):
        names = tuple(f"parameter_{column}" for column in range(parameters.shape[1]))
    return parameters, names


def _render(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def _largest_nearest_distance(samples: torch.Tensor, actions: torch.Tensor) -> float:
    """Max over samples (S, W) of the distance to the nearest of actions (L, W)."""
    largest = 0.0
    # Chunks bound the (chunk, L) distance matrix; the direct (not matmul) distance
    # gives exactly 0 for a sample equal to an action.
    for chunk in samples.split(512):
        distances = torch.cdist(
            chunk, actions, compute_mode="donot_use_mm_for_euclid_dist"
        )
        largest = max(largest, float(distances.min(dim=1).values.max()))
    return largest
