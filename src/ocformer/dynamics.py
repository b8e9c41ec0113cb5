"""The particle system: one encoder layer applied to token measures.

A layer moves every token of a sequence in two sub-steps (DESIGN.md, section 1):

    y_i  =  x_i + h * sum_j softmax_j(<Q z_i, K z_j> / sqrt(key_dim)) V x_j
    x_i  <-  proj_X( y_i + h * W_out relu(W_in y_i + b) )

with z_i = [x_i; e_i] a token's features followed by its positional encoding. The
weights of a layer are an *action*. `LayerWeights` holds a batch of actions and
`layer_step` applies all of them to a batch of sequences at once, which is how the
lifted MDP expands a state by every action of a finite action set.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch

from ocformer.embedding import project
from ocformer.errors import ConfigError, DataError

# Tensor names in the fixed order used by `flatten`, `to_tensors` and codebook files.
WEIGHT_NAMES = ("query", "key", "value", "mlp_in", "mlp_bias", "mlp_out")


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """A batch of A complete layer weight sets (the actions).

    Every tensor has the action index first. Tensors are float64 in the library; any one
    floating dtype shared by all six tensors is accepted so that tests can compare
    precisions.

    Attributes:
        query: tensor of shape (A, key_dim, dim + position_dim), the matrix Q.
        key: tensor of shape (A, key_dim, dim + position_dim), the matrix K.
        value: tensor of shape (A, dim, dim), the matrix V.
        mlp_in: tensor of shape (A, hidden, dim), the matrix W_in.
        mlp_bias: tensor of shape (A, hidden), the bias b.
        mlp_out: tensor of shape (A, dim, hidden), the matrix W_out.

    Raises:
        ConfigError: if a tensor is not a floating tensor of the right number of
            dimensions, or the shapes or dtypes disagree.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mlp_in: torch.Tensor
    mlp_bias: torch.Tensor
    mlp_out: torch.Tensor

    def __post_init__(self) -> None:
        for field in fields(self):
            tensor = getattr(self, field.name)
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise ConfigError(
                    f"`{field.name}` must be a floating torch tensor, got "
                    f"{type(tensor).__name__}; build weights with torch.float64."
                )
        if self.query.ndim != 3 or self.mlp_in.ndim != 3 or self.value.ndim != 3:
            raise ConfigError(
                "`query`, `value` and `mlp_in` must have 3 dimensions (actions first), "
                f"got shapes {self._shapes()}; add the action dimension."
            )

        # Every other shape follows from these four numbers.
        actions, key_dim, features = self.query.shape
        hidden, dim = self.mlp_in.shape[1], self.value.shape[-1]
        expected = {
            "query": (actions, key_dim, features),
            "key": (actions, key_dim, features),
            "value": (actions, dim, dim),
            "mlp_in": (actions, hidden, dim),
            "mlp_bias": (actions, hidden),
            "mlp_out": (actions, dim, hidden),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ConfigError(
                    f"`{name}` must have shape {shape} to match the other weights, got "
                    f"shapes {self._shapes()}; check the layer's dim, key_dim and "
                    "hidden size."
                )
        if features <= dim:
            raise ConfigError(
                f"`query` must have more than dim={dim} input features (tokens, then "
                f"positions), got {features}; append the position block."
            )
        dtypes = {getattr(self, name).dtype for name in WEIGHT_NAMES}
        if len(dtypes) != 1:
            raise ConfigError(
                f"all weights must share one dtype, got {sorted(map(str, dtypes))}; "
                "convert them with .to(torch.float64)."
            )

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(getattr(self, name).shape) for name in WEIGHT_NAMES}

    def __len__(self) -> int:
        return self.query.shape[0]

    @property
    def dim(self) -> int:
        """Token feature dimension d."""
        return self.value.shape[-1]

    @property
    def position_dim(self) -> int:
        """Dimension of the positional encoding e_p."""
        return self.query.shape[-1] - self.dim

    @property
    def key_dim(self) -> int:
        """Dimension of queries and keys."""
        return self.query.shape[1]

    @property
    def hidden(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.mlp_in.shape[1]

    def select(self, index: int | slice | Sequence[int] | torch.Tensor) -> LayerWeights:
        """Pick actions, keeping the action dimension.

        Args:
            index: an int, a slice, a sequence of ints or bools, or an index tensor.

        Returns:
            LayerWeights with one action per selected index (one for an int).

        Raises:
            IndexError: if an int index is out of range.
        """
        key: slice | torch.Tensor
        if isinstance(index, slice):
            key = index
        else:
            try:
                position = operator.index(index)
            except TypeError:  # a sequence, an array or a tensor of indices
                key = torch.as_tensor(index)
            else:
                if not -len(self) <= position < len(self):
                    raise IndexError(f"action {position} out of range for {len(self)}")
                # A one-long slice keeps the action axis.
                position %= len(self)
                key = slice(position, position + 1)
        return LayerWeights(**{name: getattr(self, name)[key] for name in WEIGHT_NAMES})

    def flatten(self) -> torch.Tensor:
        """Concatenate all weights of each action in the order of `WEIGHT_NAMES`.

        Returns:
            tensor of shape (A, n_weights); the Frobenius norm of a row is the norm of
            an action in the weight metric.
        """
        parts = [getattr(self, name).reshape(len(self), -1) for name in WEIGHT_NAMES]
        return torch.cat(parts, dim=1)

    def to_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Name every weight tensor, e.g. for a safetensors file.

        Args:
            prefix: prepended to each name, to store several layers in one file.

        Returns:
            {prefix + name: tensor} for the six weights, action dimension first.
        """
        return {prefix + name: getattr(self, name) for name in WEIGHT_NAMES}

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], prefix: str = ""
    ) -> LayerWeights:
        """Inverse of `to_tensors`.

        Args:
            tensors: mapping holding at least prefix + name for the six weight names.
            prefix: the prefix used when saving.

        Returns:
            LayerWeights built from those tensors.

        Raises:
            DataError: if a tensor is missing.
            ConfigError: if the shapes disagree.
        """
        missing = [
            prefix + name for name in WEIGHT_NAMES if prefix + name not in tensors
        ]
        if missing:
            raise DataError(
                f"weights must include tensors {list(WEIGHT_NAMES)} (with prefix "
                f"'{prefix}'), missing {missing}; save them with "
                "LayerWeights.to_tensors."
            )
        return cls(**{name: tensors[prefix + name] for name in WEIGHT_NAMES})


def layer_step(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    encodings: torch.Tensor,
    weights: LayerWeights,
    *,
    step: float,
    space: str,
    radius: float,
) -> torch.Tensor:
    """Apply one encoder layer to a batch of sequences, for every action at once.

    With x the token features, e_p the positional encodings, h = `step`, and (Q, K, V,
    W_in, b, W_out) the weights of one action and z_i = [x_i; e_i]:

        y_i  =  x_i + h * sum_j softmax_j(<Q z_i, K z_j> / sqrt(key_dim)) V x_j
        x_i  <-  proj_X( y_i + h * W_out relu(W_in y_i + b) )

    The sum runs over real tokens only: padding carries no mass, and its values are
    zeroed first so that whatever they hold cannot reach a real token.

    Args:
        tokens: float tensor of shape (A or 1, batch, n_tokens, dim); a leading 1 is
            shared by all A actions.
        mask: bool tensor of shape (batch, n_tokens), True for real tokens.
        encodings: float tensor of shape (n_tokens, position_dim), e_p per position.
        weights: LayerWeights with A actions.
        step: the step size h, > 0.
        space: "ball" or "sphere", the set X.
        radius: the radius R of X.

    Returns:
        tensor of shape (A, batch, n_tokens, dim); padded tokens are 0.

    Raises:
        DataError: if the shapes do not fit each other or the weights.
        ConfigError: if `step` is not a positive number.
    """
    _check_step_inputs(tokens, mask, encodings, weights)
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(
            f"`step` must be a positive number, got {step}; use e.g. 0.5."
        )

    real = mask[..., None]  # (batch, n_tokens, 1)
    tokens = tokens.masked_fill(~real, 0.0)
    positions = encodings.to(tokens.dtype).expand(*tokens.shape[:-1], -1)
    features = torch.cat([tokens, positions], dim=-1)  # (A|1, batch, n, dim + pos)

    # Weights get a batch axis so that matmul broadcasts actions against sequences.
    queries = features @ weights.query.transpose(1, 2)[:, None]  # (A, batch, n, key)
    keys = features @ weights.key.transpose(1, 2)[:, None]  # (A, batch, n, key)
    values = tokens @ weights.value.transpose(1, 2)[:, None]  # (A, batch, n, dim)

    scores = queries @ keys.transpose(-1, -2) / math.sqrt(weights.key_dim)
    scores = scores.masked_fill(~mask[:, None, :], -math.inf)  # (A, batch, n, n)
    attended = torch.softmax(scores, dim=-1) @ values  # (A, batch, n, dim)
    moved = tokens + step * attended

    hidden = torch.relu(
        moved @ weights.mlp_in.transpose(1, 2)[:, None]
        + weights.mlp_bias[:, None, None]
    )  # (A, batch, n, hidden)
    moved = moved + step * (hidden @ weights.mlp_out.transpose(1, 2)[:, None])

    projected = project(moved, space=space, radius=radius)
    return projected.masked_fill(~real, 0.0)


def _check_step_inputs(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    encodings: torch.Tensor,
    weights: LayerWeights,
) -> None:
    """Raise a DataError naming the first shape that does not fit `layer_step`."""
    if tokens.ndim != 4 or tokens.shape[0] not in (1, len(weights)):
        raise DataError(
            "`tokens` must have shape (actions or 1, batch, n_tokens, dim) with "
            f"{len(weights)} actions, got {tuple(tokens.shape)}; add the action axis "
            "with tokens[None]."
        )
    if tokens.dtype != weights.query.dtype:
        raise DataError(
            f"`tokens` must have the weights' dtype {weights.query.dtype}, got "
            f"{tokens.dtype}; convert them with .to({weights.query.dtype})."
        )
    if tokens.shape[-1] != weights.dim:
        raise DataError(
            f"`tokens` must have dim={weights.dim} features to match the weights, got "
            f"{tokens.shape[-1]}; embed the tokens with the same dim."
        )
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape[1:3]):
        raise DataError(
            f"`mask` must be a bool tensor of shape {tuple(tokens.shape[1:3])}, got "
            f"{mask.dtype} of shape {tuple(mask.shape)}; pass True for real tokens."
        )
    expected = (tokens.shape[2], weights.position_dim)
    if tuple(encodings.shape) != expected:
        raise DataError(
            f"`encodings` must have shape {expected}, got {tuple(encodings.shape)}; "
            "use positional_encoding(n_tokens, position_dim)."
        )


def run_layers(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    encodings: torch.Tensor,
    plan_weights: Sequence[LayerWeights],
    *,
    step: float,
    space: str,
    radius: float,
) -> torch.Tensor:
    """Roll a plan through the unquantized model (the "true model").

    Args:
        tokens: float tensor of shape (batch, n_tokens, dim), already in X.
        mask: bool tensor of shape (batch, n_tokens), True for real tokens.
        encodings: float tensor of shape (n_tokens, position_dim).
        plan_weights: one LayerWeights with a single action per layer, first layer
            first.
        step, space, radius: as for `layer_step`.

    Returns:
        tensor of shape (batch, n_tokens, dim), the tokens after the last layer.

    Raises:
        ConfigError: if a layer holds more than one action.
    """
    state = tokens[None]  # (1, batch, n, dim)
    for layer, weights in enumerate(plan_weights):
        if len(weights) != 1:
            raise ConfigError(
                f"`plan_weights[{layer}]` must hold exactly one action, got "
                f"{len(weights)}; pick one with weights.select(index)."
            )
        state = layer_step(
            state, mask, encodings, weights, step=step, space=space, radius=radius
        )
    return state[0]
