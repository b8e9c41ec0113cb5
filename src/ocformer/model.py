"""The trained plan as an ordinary PyTorch module, and its files.

The open-loop plan is one weight set per layer, so the trained model is a plain
encoder stack: a fixed linear embedding into X, then per layer scaled dot-product
attention on ``[x; e_p]`` with a residual step, a ReLU MLP with a residual step and the
projection onto X (the role layer normalisation plays), then mean pooling and a linear
head. Nothing in it depends on ocformer's solver; the weights travel as safetensors
and the shapes as JSON.

``ocformer train --out DIR`` writes the two files into ``DIR/model``; :func:`load_model`
takes that directory, ``DIR`` itself, or either file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional

from ocformer.atomic import write_atomic, write_text_atomic
from ocformer.cost import readout
from ocformer.data import Dataset
from ocformer.dynamics import LayerWeights
from ocformer.embedding import project
from ocformer.errors import DataError, OcformerError

FORMAT = "ocformer-model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
# Where ``ocformer train --out DIR`` puts the two files, relative to DIR.
MODEL_DIR = "model"
LOAD_FIX = "pass the directory that `ocformer train --out DIR` wrote"


class EncoderLayer(nn.Module):
    """One layer: attention and MLP sub-steps of size ``step``, then projection."""

    def __init__(
        self, weights: LayerWeights, *, step: float, space: str, radius: float
    ):
        super().__init__()
        key_dim, joint_dim = weights.query.shape[1:]
        dim, hidden = weights.dim, weights.hidden
        self.step, self.space, self.radius = step, space, radius
        linear = dict(dtype=torch.float64)
        self.query = nn.Linear(joint_dim, key_dim, bias=False, **linear)
        self.key = nn.Linear(joint_dim, key_dim, bias=False, **linear)
        self.value = nn.Linear(dim, dim, bias=False, **linear)
        self.mlp_in = nn.Linear(dim, hidden, **linear)
        self.mlp_out = nn.Linear(hidden, dim, bias=False, **linear)
        with torch.no_grad():
            self.query.weight.copy_(weights.query[0])
            self.key.weight.copy_(weights.key[0])
            self.value.weight.copy_(weights.value[0])
            self.mlp_in.weight.copy_(weights.mlp_in[0])
            self.mlp_in.bias.copy_(weights.mlp_bias[0])
            self.mlp_out.weight.copy_(weights.mlp_out[0])

    def forward(self, tokens, encodings, mask):
        """tokens (batch, n_tokens, dim), encodings (n_tokens, position_dim),
        mask (batch, n_tokens) bool -> (batch, n_tokens, dim)."""
        return encoder_step(
            tokens,
            encodings,
            mask,
            query=self.query.weight,
            key=self.key.weight,
            value=self.value.weight,
            mlp_in=self.mlp_in.weight,
            mlp_bias=self.mlp_in.bias,
            mlp_out=self.mlp_out.weight,
            step=self.step,
            space=self.space,
            radius=self.radius,
        )


def encoder_step(
    tokens: torch.Tensor,
    encodings: torch.Tensor,
    mask: torch.Tensor,
    *,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mlp_in: torch.Tensor,
    mlp_bias: torch.Tensor,
    mlp_out: torch.Tensor,
    step: float,
    space: str,
    radius: float,
) -> torch.Tensor:
    """One encoder layer as a function of its weights (differentiable in all).

    Args:
        tokens: float64 tensor of shape (batch, n_tokens, dim).
        encodings: float64 tensor of shape (n_tokens, position_dim).
        mask: bool tensor of shape (batch, n_tokens), True for real tokens.
        query, key: (key_dim, dim + position_dim); value: (dim, dim);
            mlp_in: (hidden, dim); mlp_bias: (hidden,); mlp_out: (dim, hidden):
            one action's weights, as in :class:`LayerWeights` without the action
            axis.
        step, space, radius: the step size h and the set X.

    Returns:
        The moved tokens, shape (batch, n_tokens, dim), padding 0.
    """
    joint = torch.cat([tokens, encodings.expand(len(tokens), -1, -1)], dim=-1)
    attended = functional.scaled_dot_product_attention(
        functional.linear(joint, query),
        functional.linear(joint, key),
        functional.linear(tokens, value),
        attn_mask=mask[:, None, :],
    )
    middle = tokens + step * attended
    hidden = torch.relu(functional.linear(middle, mlp_in, mlp_bias))
    moved = middle + step * functional.linear(hidden, mlp_out)
    moved = project(moved, space=space, radius=radius)
    return moved.masked_fill(~mask[..., None], 0.0)


class OCTransformer(nn.Module):
    """A Transformer whose layer weights come from an optimal control plan.

    Args:
        config: the JSON-able description (see :func:`save_model`); holds the
            embedding, the dimensions, the task and how the data were split.
        layers: one single-action :class:`LayerWeights` per layer.
        head_weight: float64 tensor of shape (dim, n_outputs).
        head_bias: float64 tensor of shape (n_outputs,).
    """

    def __init__(self, config, layers, head_weight, head_bias):
        super().__init__()
        self.config = config
        embedding = config["embedding"]
        as_tensor = dict(dtype=torch.float64)
        self.register_buffer(
            "embedding_mean", torch.tensor(embedding["mean"], **as_tensor)
        )
        self.register_buffer(
            "embedding_matrix", torch.tensor(embedding["matrix"], **as_tensor)
        )
        self.register_buffer(
            "encodings", torch.tensor(config["encodings"], **as_tensor)
        )
        self.layers = nn.ModuleList(
            EncoderLayer(
                weights,
                step=config["step"],
                space=embedding["space"],
                radius=embedding["radius"],
            )
            for weights in layers
        )
        self.head = nn.Linear(*head_weight.shape, dtype=torch.float64)
        with torch.no_grad():
            self.head.weight.copy_(head_weight.T)
            self.head.bias.copy_(head_bias)

    @property
    def token_dim(self) -> int:
        return int(self.embedding_mean.shape[0])

    def features(self, tokens: torch.Tensor, mask: torch.Tensor | None = None):
        """Pooled final tokens (batch, dim) of raw tokens (batch, n_tokens, d_in)."""
        tokens = torch.as_tensor(tokens, dtype=torch.float64)
        expected = (len(self.encodings), self.token_dim)
        if tokens.ndim != 3 or tokens.shape[1:] != expected:
            raise DataError(
                f"the model takes sequences of shape (batch, {expected[0]}, "
                f"{expected[1]}) (tokens, features per token), got shape "
                f"{tuple(tokens.shape)}; predict on data shaped like the training data."
            )
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != tokens.shape[:2]:
            raise DataError(
                f"`mask` must have shape {tuple(tokens.shape[:2])}, one flag per "
                f"token, got {tuple(mask.shape)}; pass True for real tokens."
            )

        state = self.embed(tokens, mask)
        for layer in self.layers:
            state = layer(state, self.encodings, mask)
        return readout(state, mask)

    def embed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embedded tokens in X, shape (batch, n_tokens, dim), padding 0, of checked
        raw tokens (batch, n_tokens, d_in) and a bool mask (batch, n_tokens)."""
        # Padding is replaced, not multiplied, by zero: raw padding values may be
        # anything, NaN included, and must not reach a real token.
        padding = ~mask[..., None]  # (batch, n_tokens, 1)
        tokens = tokens.masked_fill(padding, 0.0)
        embedded = (tokens - self.embedding_mean) @ self.embedding_matrix
        embedded = embedded * self.config["embedding"]["scale"]
        space = self.config["embedding"]["space"]
        radius = self.config["embedding"]["radius"]
        return project(embedded, space=space, radius=radius).masked_fill(padding, 0.0)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None):
        """Head outputs, shape (batch, n_outputs): class scores or the prediction."""
        return self.head(self.features(tokens, mask))


def save_model(model: OCTransformer, directory: Path) -> tuple[Path, Path]:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.contiguous() for name, value in model.state_dict().items()}
    weights_path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    write_atomic(weights_path, lambda tmp: save_file(tensors, tmp))
    # The JSON names the weights it belongs to, so a mismatched pair is refused.
    description = {**model.config, "weights_digest": _digest(weights_path)}
    text = json.dumps(description, indent=1, sort_keys=True)
    write_text_atomic(config_path, text)
    return weights_path, config_path


def _digest(path: Path) -> str:
    """xxh3-128 of a file's bytes, in hex."""
    return xxhash.xxh3_128_hexdigest(Path(path).read_bytes())


def model_directory(path: str | Path) -> Path:
    """The directory holding ``model.json`` for a model path given by a user.

    Args:
        path: a directory written by :func:`save_model`, the ``--out`` directory of
            ``ocformer train`` (which holds it as ``model/``), or either model file.

    Raises:
        DataError: if ``path`` is none of these.
    """
    path = Path(path)
    fix = LOAD_FIX
    if not path.exists():
        raise DataError(f"model path {str(path)!r} does not exist; {fix}.")
    if path.is_file():
        if path.name not in (CONFIG_FILE, WEIGHTS_FILE):
            raise DataError(
                f"model path {str(path)!r} must be a directory or its {CONFIG_FILE} "
                f"or {WEIGHTS_FILE}, got another file; {fix}."
            )
        return path.parent
    for directory in (path, path / MODEL_DIR):
        if (directory / CONFIG_FILE).is_file():
            return directory
    raise DataError(
        f"cannot load a model from {str(path)!r}: it holds no {CONFIG_FILE}, neither "
        f"directly nor in {MODEL_DIR}/; {fix}."
    )


def load_model(path: str | Path) -> OCTransformer:
    """Load a model saved by :func:`save_model`.

    Args:
        path: as for :func:`model_directory`.

    Raises:
        DataError: if no model can be loaded from ``path``.
    """
    directory = model_directory(path)
    fix = LOAD_FIX
    try:
        config: Any = json.loads((directory / CONFIG_FILE).read_text())
        tensors = load_file(directory / WEIGHTS_FILE)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise DataError(
            f"cannot load a model from {str(directory)!r} ({error}); {fix}."
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise DataError(
            f"{str(directory / CONFIG_FILE)!r} is not an ocformer model "
            f"(format {found!r}, expected {FORMAT!r}); {fix}."
        )

    digest = config.get("weights_digest")
    if digest is not None and digest != _digest(directory / WEIGHTS_FILE):
        raise DataError(
            f"{str(directory / WEIGHTS_FILE)!r} is not the weights file that "
            f"{str(directory / CONFIG_FILE)!r} was saved with; {fix}."
        )

    # A model.json and model.safetensors that do not belong together fail here.
    try:
        if not isinstance(config.get("step"), int | float) or isinstance(
            config.get("step"), bool
        ):
            raise TypeError(f"`step` must be a number, got {config.get('step')!r}")
        missing = [k for k in ("task", "classes", "cost", "data") if k not in config]
        if missing:  # read by predict, not by the module
            raise KeyError(missing[0])
        layers = [
            LayerWeights.from_tensors(
                {
                    "query": tensors[f"layers.{i}.query.weight"][None],
                    "key": tensors[f"layers.{i}.key.weight"][None],
                    "value": tensors[f"layers.{i}.value.weight"][None],
                    "mlp_in": tensors[f"layers.{i}.mlp_in.weight"][None],
                    "mlp_bias": tensors[f"layers.{i}.mlp_in.bias"][None],
                    "mlp_out": tensors[f"layers.{i}.mlp_out.weight"][None],
                }
            )
            for i in range(config["n_layers"])
        ]
        model = OCTransformer(
            config, layers, tensors["head.weight"].T, tensors["head.bias"]
        )
        model.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError, OcformerError) as error:
        raise DataError(
            f"the model in {str(directory)!r} is damaged or incomplete "
            f"({type(error).__name__}: {error}); {fix}."
        ) from None
    return model


def align_dataset(model: OCTransformer, dataset: Dataset) -> Dataset:
    """``dataset`` with its targets as ``model``'s class indices, checked to fit.

    A dataset file numbers its own classes 0..C-1 in label order, so a file that holds
    only some of the training classes numbers them differently from the model; its
    targets are renumbered by label here.

    Args:
        model: a trained model.
        dataset: sequences to evaluate it on.

    Returns:
        The dataset, with the model's classes for classification.

    Raises:
        DataError: if the tokens' shape, the task or the class labels do not fit.
    """
    expected = (len(model.encodings), model.token_dim)
    found = (dataset.n_tokens, dataset.token_dim)
    if found != expected:
        raise DataError(
            f"the model takes sequences of shape {expected} (tokens, features per "
            f"token), got {found} in dataset '{dataset.name}'; predict on data shaped "
            "like the training data."
        )
    task = model.config["task"]
    if dataset.task != task:
        raise DataError(
            f"the model was trained for {task}, got a {dataset.task} dataset "
            f"'{dataset.name}'; predict on data with targets like the training data."
        )
    if task != "classification":
        return dataset

    classes = list(model.config["classes"])
    unknown = [label for label in dataset.classes if label not in classes]
    if unknown:
        raise DataError(
            f"the model knows the classes {classes}, got labels {unknown} in dataset "
            f"'{dataset.name}'; predict on data labelled like the training data."
        )
    renumber = np.array([classes.index(label) for label in dataset.classes])
    return Dataset(
        name=dataset.name,
        tokens=dataset.tokens,
        targets=renumber[dataset.targets],
        mask=dataset.mask,
        task=dataset.task,
        classes=tuple(classes),
        chronological=dataset.chronological,
    )
