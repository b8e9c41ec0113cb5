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
from torch.nn import functional

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

    def to(self, device: torch.device | str) -> LayerWeights:
        """The same weights on ``device``."""
        return LayerWeights(
            **{name: getattr(self, name).to(device) for name in WEIGHT_NAMES}
        )

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

    The result of one action on one sequence is the same bit for bit whatever else
    shares the call: other actions, other sequences, their number and their order. The
    DP (all actions on many states) and the brute-force oracle (one action per state)
    therefore move identical states identically. This holds because every batched
    product works on items whose shapes depend only on the layer's dimensions and a
    fixed tile of sequences (see `_tile_shape`), never on the size of the batch; it is
    tested on the CPU. Runs in the dtype and on the device of `tokens`.

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
        tensor of shape (A, batch, n_tokens, dim), in the dtype and on the device of
        `tokens`; padded tokens are 0.

    Raises:
        DataError: if the shapes do not fit each other or the weights.
        ConfigError: if `step` is not a positive number.
    """
    _check_step_inputs(tokens, mask, encodings, weights)
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(
            f"`step` must be a positive number, got {step}; use e.g. 0.5."
        )

    project(tokens[:0], space=space, radius=radius)  # rejects a bad space or radius
    n_actions, (_, batch, n_tokens, dim) = len(weights), tokens.shape
    mask = mask.to(tokens.device)
    # Sequences are filled up with tokens that carry no mass, so that every row of
    # the batched products starts on a 16-byte boundary (see `_aligned`).
    slots = _aligned(n_tokens, tokens.dtype)
    if slots > n_tokens:
        tokens = functional.pad(tokens, (0, 0, 0, slots - n_tokens))
        mask = functional.pad(mask, (0, slots - n_tokens), value=False)
        encodings = functional.pad(encodings, (0, 0, 0, slots - n_tokens))
    operands = _Operands.build(weights, encodings, tokens.dtype, tokens.device)
    # Without padding there is nothing to zero or to mask: skip those passes.
    padded = not bool(mask.all())
    rows, group = _tile_shape(operands, slots, tokens.device)

    moved = torch.empty(
        (n_actions, batch, slots, dim), dtype=tokens.dtype, device=tokens.device
    )
    shared = tokens.shape[0] == 1
    for start in range(0, batch, rows):
        tile = slice(start, start + rows)
        tile_tokens, tile_mask = _pad_rows(
            tokens[:, tile], mask[tile] if padded else None, rows
        )
        # Shared tokens are copied once per tile for a whole group of actions.
        if shared:
            joint, ones = operands.augment(tile_tokens, min(group, n_actions))
        for first in range(0, n_actions, group):
            actions = slice(first, first + group)
            size = len(range(n_actions)[actions])
            if not shared:
                joint, ones = operands.augment(tile_tokens[actions], size)
            operands.move_tile(
                joint[:size],
                ones[:size],
                tile_mask,
                actions,
                moved[actions, tile],
                step=step,
                space=space,
                radius=radius,
            )
    return moved if slots == n_tokens else moved[:, :, :n_tokens].contiguous()


# Sequences in one tile of `layer_step` hold about this many tokens. The tile fixes the
# shapes of all batched products, so it must not depend on the batch (see layer_step);
# on a CPU it keeps a tile's temporaries in cache, on a GPU it gives each launch work.
TILE_TOKENS = {"cpu": 512, "cuda": 16384}
# Actions that move one tile together: about this many elements in the widest
# temporary. Results do not depend on it, only the memory traffic does.
GROUP_ELEMENTS = {"cpu": 2**18, "cuda": 2**26}
# torch multiplies batches of matrices with fewer multiply-adds than this each by a
# plain loop, about 7x slower than BLAS: such products are padded with zeros.
BLAS_MULTIPLY_ADDS = 400


def _tile_shape(
    operands: _Operands, n_tokens: int, device: torch.device
) -> tuple[int, int]:
    """Sequences per tile and actions per group for `layer_step` on `device`."""
    kind = device.type if device.type in TILE_TOKENS else "cuda"
    rows = max(1, TILE_TOKENS[kind] // n_tokens)
    widest = rows * n_tokens * operands.widest
    return rows, max(1, GROUP_ELEMENTS[kind] // widest)


def _aligned(size: int, dtype: torch.dtype) -> int:
    """`size` rounded up to whole 16-byte units of `dtype` elements.

    The batched products give each sequence the same bits wherever it sits in a
    batch only if every matrix row starts on a 16-byte boundary: with rows of an odd
    number of float64 elements, MKL has been seen to round a sequence differently by
    its offset in the batch (AMD EPYC, torch 2.13), and with 16-byte rows never, over
    every even size up to 26. Zero padding changes no sum.
    """
    per_unit = max(1, 16 // torch.empty((), dtype=dtype).element_size())
    return -(-size // per_unit) * per_unit


def _blas_size(size: int, others: int) -> int:
    """`size`, or a larger one that takes a product with `others` to BLAS.

    Zero padding at most doubles the size; beyond that the plain loop is cheaper.
    """
    wanted = -(-BLAS_MULTIPLY_ADDS // others)
    return wanted if size < wanted <= 2 * size else size


def _pad_rows(
    tokens: torch.Tensor, mask: torch.Tensor | None, rows: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero the padding of a tile and fill it up to `rows` sequences of zeros.

    Shapes: tokens (A or 1, real, n, dim) -> (A or 1, rows, n, dim); mask (real, n)
    -> (rows, n) with the filler marked real (it must not produce NaN).
    """
    if mask is not None:
        tokens = tokens.masked_fill(~mask[..., None], 0.0)
    missing = rows - tokens.shape[1]
    if missing:
        filler = tokens.new_zeros(tokens.shape[0], missing, *tokens.shape[2:])
        tokens = torch.cat([tokens, filler], dim=1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(missing, mask.shape[1])])
    return tokens, mask


@dataclass(frozen=True)
class _Operands:
    """The weights of `layer_step`, rearranged once per call for batched products.

    A token travels as a row ``[x, 1, 0...]`` of `width` >= dim + 1 entries, and its
    joint features as ``[x, e, 0...]`` of `features` >= dim + position_dim entries;
    the zeros only take small products to BLAS (`_blas_size`).

    Attributes (A actions, k = features, w = width):
        bilinear: (A, k, k), G = Q^T K / sqrt(key_dim), zero padded. A score is
            <Q z_i, K z_j> / sqrt(key_dim) = (z_i^T G) z_j: one product per action
            instead of separate queries and keys, and the keys are the raw z_j.
        value: (A, w, w), V^T in the top left corner, zeros elsewhere.
        mlp_in: (A, w, hidden), [W_in^T; b; 0]: the bias rides on the ones column,
            so no pass adds it.
        mlp_out: (A, hidden, w), [W_out^T, 0]; the ones column survives both
            residual steps untouched.
        encodings: (n_tokens, position_dim).
    """

    bilinear: torch.Tensor
    value: torch.Tensor
    mlp_in: torch.Tensor
    mlp_out: torch.Tensor
    encodings: torch.Tensor

    @classmethod
    def build(
        cls,
        weights: LayerWeights,
        encodings: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ) -> _Operands:
        def get(name: str) -> torch.Tensor:
            return getattr(weights, name).to(device=device, dtype=dtype)

        actions, dim = len(weights), weights.dim
        joint, n_tokens = dim + weights.position_dim, len(encodings)
        # Scores multiply (n, k) by (k, n) and mixing (n, n) by (n, w).
        features = _aligned(_blas_size(joint, n_tokens * n_tokens), dtype)
        width = _aligned(_blas_size(dim + 1, n_tokens * n_tokens), dtype)
        hidden = _aligned(weights.hidden, dtype)

        query, key = get("query"), get("key")
        bilinear = query.new_zeros(actions, features, features)
        bilinear[:, :joint, :joint] = query.transpose(1, 2) @ key
        bilinear /= math.sqrt(weights.key_dim)
        value = query.new_zeros(actions, width, width)
        value[:, :dim, :dim] = get("value").transpose(1, 2)
        # Hidden units beyond the layer's own are 0 in and out.
        mlp_in = query.new_zeros(actions, width, hidden)
        mlp_in[:, :dim, : weights.hidden] = get("mlp_in").transpose(1, 2)
        mlp_in[:, dim, : weights.hidden] = get("mlp_bias")
        mlp_out = query.new_zeros(actions, hidden, width)
        mlp_out[:, : weights.hidden, :dim] = get("mlp_out").transpose(1, 2)
        return cls(
            bilinear=bilinear,
            value=value,
            mlp_in=mlp_in,
            mlp_out=mlp_out,
            encodings=encodings.to(device=device, dtype=dtype),
        )

    @property
    def widest(self) -> int:
        """Columns of the widest per-token temporary."""
        return max(self.bilinear.shape[1], self.mlp_in.shape[2], self.value.shape[1])

    def augment(
        self, tokens: torch.Tensor, copies: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``[x, e, 0...]`` and ``[x, 1, 0...]`` of a tile, `copies` times.

        Shapes: tokens (copies or 1, rows, n, dim) -> (copies, rows, n, features)
        and (copies, rows, n, width). Real copies, not a broadcast: every batched
        product then sees the same memory layout, shared tokens or not.
        """
        dim = tokens.shape[-1]
        lead = (copies, *tokens.shape[1:3])
        joint = tokens.new_zeros(*lead, self.bilinear.shape[1])
        joint[..., :dim] = tokens
        joint[..., dim : dim + self.encodings.shape[1]] = self.encodings
        ones = tokens.new_zeros(*lead, self.value.shape[1])
        ones[..., :dim] = tokens
        ones[..., dim] = 1.0
        return joint, ones

    def move_tile(
        self,
        joint: torch.Tensor,
        ones: torch.Tensor,
        mask: torch.Tensor | None,
        actions: slice,
        out: torch.Tensor,
        *,
        step: float,
        space: str,
        radius: float,
    ) -> None:
        """Move one tile by a group of actions and write the real rows into `out`.

        Args:
            joint: (Ag, rows, n, features), from `augment`, padding zeroed.
            ones: (Ag, rows, n, width), from `augment`.
            mask: (rows, n), or None when the whole batch has no padding.
            actions: the group's actions, a slice of the operands.
            out: (Ag, real, n, dim), where the first `real` rows go.
        """
        bilinear, value = self.bilinear[actions], self.value[actions]
        mlp_in, mlp_out = self.mlp_in[actions], self.mlp_out[actions]
        group, rows, n_tokens, features = joint.shape
        width, dim, flat = ones.shape[-1], out.shape[-1], rows * n_tokens

        # Scores (z_i^T G) z_j: one (rows * n, k) x (k, k) product per action, then
        # one (n, k) x (k, n) product per action and sequence.
        left = torch.bmm(joint.view(group, flat, features), bilinear)
        scores = torch.bmm(
            left.view(group * rows, n_tokens, features),
            joint.view(group * rows, n_tokens, features).transpose(1, 2),
        )  # (Ag * rows, n, n)
        if mask is not None:
            hidden_keys = ~mask[None, :, None, :]  # (1, rows, 1, n)
            scores.view(group, rows, n_tokens, n_tokens).masked_fill_(
                hidden_keys, -math.inf
            )

        # Unnormalised softmax weights E (torch.softmax is slow on rows this short).
        # Mixing [x_j, 1] by E gives sum_j E_ij x_j and, in the ones column, the
        # normaliser sum_j E_ij; V applies after mixing, one product fewer per pair.
        scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
        mixed = torch.bmm(scores, ones.view(group * rows, n_tokens, width))
        mixed = mixed.view(group, flat, width)
        scale = step / mixed[..., dim : dim + 1]  # h / sum_j E_ij, (Ag, rows * n, 1)
        middle = torch.addcmul(
            ones.view(group, flat, width), torch.bmm(mixed, value), scale
        )  # y = x + h V w, (Ag, rows * n, width), ones column still 1

        hidden = torch.bmm(middle, mlp_in).relu_()
        moved = middle.baddbmm_(hidden, mlp_out, alpha=step)[..., :dim]

        # Projection onto X, written straight into the output.
        moved = moved.view(group, rows, n_tokens, dim)[:, : out.shape[1]]
        _project_into(moved, out, space=space, radius=radius)
        if mask is not None:
            out.masked_fill_(~mask[None, : out.shape[1], :, None], 0.0)


def _project_into(
    points: torch.Tensor, out: torch.Tensor, *, space: str, radius: float
) -> None:
    """Write ``project(points)`` into `out`, in fewer passes for the ball.

    On the ball ``x * min(1, R / |x|)`` equals `embedding.project` bit for bit: inside
    the ball the factor is exactly 1, outside it is the same R / |x|.
    """
    if space != "ball":
        out.copy_(project(points, space=space, radius=radius))
        return
    norms = torch.linalg.vector_norm(points, dim=-1, keepdim=True)
    torch.mul(points, (radius / norms).clamp_(max=1.0), out=out)


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
