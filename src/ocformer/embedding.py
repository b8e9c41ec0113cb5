"""The fixed map from raw tokens into the compact feature set X, and positions.

DESIGN.md section 1: raw token features of size d_in go through a linear map chosen
from the training data (PCA, or a seeded random projection), a scale that puts the
training tokens at most at distance R from the origin, and the projection onto X, a
ball of radius R or the sphere of radius R in R^dim.

Example:
    >>> import numpy as np
    >>> tokens = np.random.default_rng(0).normal(size=(10, 4, 3))
    >>> mask = np.ones((10, 4), dtype=bool)
    >>> embedding = Embedding.fit(tokens, mask, EmbeddingConfig(dim=2))
    >>> features = embedding(tokens, mask)
    >>> features.shape, bool(np.linalg.norm(features, axis=-1).max() <= 1 + 1e-12)
    ((10, 4, 2), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ocformer.errors import ConfigError, DataError

SPACES = ("ball", "sphere")
METHODS = ("auto", "pca", "random")
# Token dimension d when none is asked for (capped at the token size for pca).
DEFAULT_DIM = 16


@dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    """Options of the embedding into X.

    Attributes:
        dim: feature dimension d of X, at least 1 (at most token_dim for pca);
            None takes ``DEFAULT_DIM``, capped at token_dim for pca.
        method: "auto" (pca when dim <= token_dim, else random), "pca" (principal
            axes of the training tokens) or "random" (a seeded
            Gaussian matrix / sqrt(dim)).
        space: "ball" or "sphere".
        radius: radius R of X, positive.
        position_dim: size of the positional encoding, even and at least 2.
        seed: seed of the random matrix.

    Raises:
        ConfigError: an option is out of range.
    """

    dim: int | None = None
    method: Literal["auto", "pca", "random"] = "auto"
    space: Literal["ball", "sphere"] = "ball"
    radius: float = 1.0
    position_dim: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim is not None and self.dim < 1:
            raise ConfigError(
                f"`dim` must be >= 1, got {self.dim}; use at least one feature."
            )
        if self.method not in METHODS:
            raise ConfigError(
                f"the embedding `method` (--embedding) must be 'auto', 'pca' or "
                f"'random', got {self.method!r}; pick one."
            )
        _check_space(self.space, self.radius)
        if self.position_dim < 2 or self.position_dim % 2:
            raise ConfigError(
                f"`position_dim` must be even and >= 2, got {self.position_dim}; "
                "positions use cosine and sine pairs."
            )


def _check_space(space: str, radius: float) -> None:
    """Raise a ConfigError unless (space, radius) describes a valid X."""
    if space not in SPACES:
        raise ConfigError(
            f"`space` must be 'ball' or 'sphere', got {space!r}; pick one."
        )
    if not (math.isfinite(radius) and radius > 0):
        raise ConfigError(
            f"`radius` must be positive and finite, got {radius}; use e.g. 1.0."
        )


@dataclass(frozen=True, eq=False)
class Embedding:
    """A fitted affine map from raw tokens into X.

    A real token t of shape (token_dim,) maps to proj_X(scale * (t - mean) @ matrix);
    padded tokens map to 0.

    Attributes:
        mean: float64 array of shape (token_dim,), the mean of the training tokens.
        matrix: float64 array of shape (token_dim, dim).
        scale: positive factor applied after the matrix, so that the training tokens
            have largest norm `radius` (1.0 when they all coincide up to rounding).
        space: "ball" or "sphere".
        radius: radius R of X.
    """

    mean: np.ndarray
    matrix: np.ndarray
    scale: float
    space: str
    radius: float

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        matrix = np.asarray(self.matrix, dtype=np.float64)
        if matrix.ndim != 2 or mean.shape != matrix.shape[:1]:
            raise DataError(
                f"`mean` and `matrix` of an embedding must have shapes (token_dim,) "
                f"and (token_dim, dim), got {mean.shape} and {matrix.shape}; "
                "refit the embedding."
            )
        _check_space(self.space, self.radius)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "radius", float(self.radius))

    @property
    def token_dim(self) -> int:
        """Number of raw features per token the embedding was fitted on."""
        return self.matrix.shape[0]

    @property
    def dim(self) -> int:
        """Dimension d of X."""
        return self.matrix.shape[1]

    @classmethod
    def fit(
        cls, tokens: np.ndarray, mask: np.ndarray, config: EmbeddingConfig
    ) -> Embedding:
        """Fit the embedding to the real training tokens.

        Args:
            tokens: float array of shape (n_sequences, n_tokens, token_dim).
            mask: bool array of shape (n_sequences, n_tokens); True marks a real token.
            config: the embedding options.

        Returns:
            The fitted embedding.

        Raises:
            ConfigError: pca with `config.dim` above token_dim.
            DataError: the shapes disagree, or there are too few real tokens (none,
                or fewer than `config.dim` for pca).
        """
        tokens, mask = _check_tokens(tokens, mask)
        real = tokens[mask]  # (n_real, token_dim)
        token_dim = real.shape[1]

        dim = config.dim
        if dim is None:
            dim = min(DEFAULT_DIM, token_dim) if config.method == "pca" else DEFAULT_DIM
        method = config.method
        if method == "auto":
            method = "pca" if dim <= token_dim else "random"
        if method == "pca" and dim > token_dim:
            raise ConfigError(
                f"`dim` must be <= {token_dim} (the features per token) for pca, "
                f"got {dim}; use --embedding random or a smaller --dim."
            )
        needed = dim if method == "pca" else 1
        if real.shape[0] < needed:
            raise DataError(
                f"fitting a {method} embedding must see at least {needed} real "
                f"tokens, got {real.shape[0]}; use more data or a smaller dim."
            )

        if method == "pca":
            mean, matrix = _principal_axes(real, dim)
        else:
            rng = np.random.default_rng(config.seed)
            mean = real.mean(axis=0)
            matrix = rng.standard_normal((token_dim, dim)) / math.sqrt(dim)

        # A spread at the level of the centring's rounding error is no spread: scaling
        # it up to the radius would blow noise up by ~1e15, so such data keep scale 1.
        largest = float(np.linalg.norm((real - mean) @ matrix, axis=-1).max())
        noise = 1e-12 * float(np.abs(real).max()) * float(np.linalg.norm(matrix))
        scale = config.radius / largest if largest > noise else 1.0
        return cls(mean, matrix, scale, config.space, config.radius)

    def __call__(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Embed tokens into X.

        Args:
            tokens: float array of shape (n_sequences, n_tokens, token_dim).
            mask: bool array of shape (n_sequences, n_tokens); True marks a real token.

        Returns:
            float64 array of shape (n_sequences, n_tokens, dim): real tokens in X,
            padded tokens 0.

        Raises:
            DataError: the shapes disagree, or token_dim differs from the one the
                embedding was fitted on.
        """
        tokens, mask = _check_tokens(tokens, mask)
        if tokens.shape[2] != self.token_dim:
            raise DataError(
                f"tokens have {tokens.shape[2]} features per token but the embedding "
                f"was fitted on {self.token_dim}; embed data with the features of the "
                "training set."
            )
        features = (tokens - self.mean) @ self.matrix * self.scale  # (M, n, dim)
        features = project(
            torch.from_numpy(features), space=self.space, radius=self.radius
        ).numpy()
        features[~mask] = 0.0
        return features

    def to_dict(self) -> dict[str, Any]:
        """Return the embedding as plain lists and numbers, for JSON export."""
        return {
            "mean": self.mean.tolist(),
            "matrix": self.matrix.tolist(),
            "scale": self.scale,
            "space": self.space,
            "radius": self.radius,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Embedding:
        """Rebuild an embedding written by `to_dict`.

        Raises:
            DataError: a key is missing or the arrays have the wrong shapes.
        """
        keys = ("mean", "matrix", "scale", "space", "radius")
        missing = [key for key in keys if key not in data]
        if missing:
            raise DataError(
                f"an exported embedding must have keys mean, matrix, scale, space "
                f"and radius, got none for {', '.join(missing)}; export it again."
            )
        return cls(
            mean=np.array(data["mean"], dtype=np.float64),
            matrix=np.array(data["matrix"], dtype=np.float64),
            scale=data["scale"],
            space=data["space"],
            radius=data["radius"],
        )


def _check_tokens(
    tokens: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return tokens as float64 and mask as bool after checking their shapes."""
    tokens = np.asarray(tokens, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if tokens.ndim != 3 or mask.shape != tokens.shape[:2]:
        raise DataError(
            f"`tokens` and `mask` must have shapes (n_sequences, n_tokens, token_dim) "
            f"and (n_sequences, n_tokens), got {tokens.shape} and {mask.shape}; "
            "pass a Dataset's tokens and mask."
        )
    return tokens, mask


def _principal_axes(real: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (token_dim,) and top `dim` principal axes (token_dim, dim) of tokens."""
    from sklearn.decomposition import PCA

    # The full SVD solver is exact and seed-free. When every token is the same, the
    # explained-variance ratio (unused here) divides 0 by 0; the axes stay valid.
    with np.errstate(invalid="ignore", divide="ignore"):
        pca = PCA(n_components=dim, svd_solver="full").fit(real)
    return pca.mean_, pca.components_.T


def project(points: torch.Tensor, *, space: str, radius: float) -> torch.Tensor:
    """Project points onto X, the ball or the sphere of radius R around 0.

    ball: x * min(1, R / |x|), the nearest point of the ball. sphere: R * x / |x|,
    with the zero vector sent to R * e_0 (any choice is a nearest point).

    Args:
        points: float tensor of shape (..., dim), finite with norms that do not
            overflow in float64.
        space: "ball" or "sphere".
        radius: radius R.

    Returns:
        Tensor of the same shape and dtype as `points`.

    Raises:
        ConfigError: unknown `space` or non-positive `radius`.
    """
    _check_space(space, radius)
    norms = torch.linalg.vector_norm(points, dim=-1, keepdim=True)  # (..., 1)
    if space == "ball":
        outside = norms > radius
        safe = torch.where(outside, norms, torch.ones_like(norms))
        return torch.where(outside, points * (radius / safe), points)

    # Dividing by the largest entry first keeps |x| from underflowing for tiny x.
    largest = points.abs().amax(dim=-1, keepdim=True)  # (..., 1)
    nonzero = largest > 0
    scaled = points / torch.where(nonzero, largest, torch.ones_like(largest))
    norms = torch.linalg.vector_norm(scaled, dim=-1, keepdim=True)
    safe = torch.where(nonzero, norms, torch.ones_like(norms))
    pole = torch.zeros_like(points)
    pole[..., 0] = radius
    return torch.where(nonzero, scaled / safe * radius, pole)


def positional_encoding(n_tokens: int, dim: int) -> np.ndarray:
    """Fourier features of the positions 0..n_tokens-1.

    Row p is [cos_1, sin_1, cos_2, sin_2, ...] with cos_k = cos(pi k p / n_tokens)
    and sin_k = sin(pi k p / n_tokens), for k = 1..dim/2.

    The lowest frequency turns half a circle over the sequence, not a full one: with
    a full turn the first token would follow the last, position-only attention would
    be circulant, and every position would weigh the same after mean pooling, so no
    order could reach the readout.

    Args:
        n_tokens: number of positions n, at least 1.
        dim: size of the encoding, even and at least 2.

    Returns:
        float64 array of shape (n_tokens, dim).

    Raises:
        ConfigError: `n_tokens` below 1 or `dim` odd or below 2.

    Example:
        >>> encoding = positional_encoding(2, 2)  # quarter turns
        >>> bool(np.allclose(encoding, [[1, 0], [0, 1]]))
        True
    """
    if n_tokens < 1:
        raise ConfigError(
            f"`n_tokens` must be >= 1, got {n_tokens}; sequences need a token."
        )
    if dim < 2 or dim % 2:
        raise ConfigError(
            f"`dim` must be even and >= 2, got {dim}; positions use cosine and sine "
            "pairs."
        )
    frequencies = np.arange(1, dim // 2 + 1)  # (dim/2,)
    angles = np.pi * np.outer(np.arange(n_tokens), frequencies) / n_tokens
    encoding = np.empty((n_tokens, dim), dtype=np.float64)
    encoding[:, 0::2] = np.cos(angles)
    encoding[:, 1::2] = np.sin(angles)
    return encoding
