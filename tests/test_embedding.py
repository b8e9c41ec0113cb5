"""Tests of ocformer.embedding: the map into X, the projection and the positions."""

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ocformer.data import digits, order
from ocformer.embedding import (
    Embedding,
    EmbeddingConfig,
    positional_encoding,
    project,
)
from ocformer.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def padded():
    """Order-task tokens (40, 6, 5) with the last two tokens of every other sequence
    padded."""
    dataset = order(n_sequences=40, n_tokens=6, token_dim=5, seed=1)
    mask = np.ones((40, 6), dtype=bool)
    mask[::2, 4:] = False
    return dataset.tokens, mask


def norms(features):
    """Euclidean norm of every token: (..., dim) -> (...)."""
    return np.linalg.norm(features, axis=-1)


# Fitting and applying the embedding.


@pytest.mark.parametrize("method", ["pca", "random"])
def test_training_tokens_fill_the_ball(padded, method):
    """Embedded real training tokens lie in the ball, the farthest on its boundary."""
    tokens, mask = padded
    config = EmbeddingConfig(dim=3, method=method, radius=2.5)
    features = Embedding.fit(tokens, mask, config)(tokens, mask)
    assert features.shape == (40, 6, 3) and features.dtype == np.float64
    assert abs(norms(features[mask]).max() - 2.5) < 1e-12


def test_pca_axes_are_orthonormal_and_centred(padded):
    """pca centres on the mean of the real tokens and uses orthonormal axes."""
    tokens, mask = padded
    embedding = Embedding.fit(tokens, mask, EmbeddingConfig(dim=3))
    np.testing.assert_allclose(embedding.mean, tokens[mask].mean(axis=0), atol=1e-12)
    gram = embedding.matrix.T @ embedding.matrix
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-12)


def test_sphere_puts_real_tokens_on_the_sphere(padded):
    """With space sphere every real token has norm exactly the radius."""
    tokens, mask = padded
    config = EmbeddingConfig(dim=2, space="sphere", radius=0.5)
    features = Embedding.fit(tokens, mask, config)(tokens, mask)
    np.testing.assert_allclose(norms(features[mask]), 0.5, rtol=1e-12)


@pytest.mark.parametrize("space", ["ball", "sphere"])
def test_padded_tokens_stay_zero(padded, space):
    """Padded tokens embed to the zero vector."""
    tokens, mask = padded
    embedding = Embedding.fit(tokens, mask, EmbeddingConfig(dim=2, space=space))
    features = embedding(tokens, mask)
    assert np.all(features[~mask] == 0.0)


def test_new_tokens_are_projected_into_the_ball(padded):
    """Tokens far outside the training range still land in X."""
    tokens, mask = padded
    embedding = Embedding.fit(tokens, mask, EmbeddingConfig(dim=3))
    assert norms(embedding(100.0 * tokens, mask)).max() <= 1.0 + 1e-12


def test_random_embedding_is_reproducible_and_may_raise_dim(padded):
    """random accepts dim > token_dim, and the same seed gives the same matrix."""
    tokens, mask = padded
    config = EmbeddingConfig(dim=8, method="random", seed=3)
    first = Embedding.fit(tokens, mask, config)
    again = Embedding.fit(tokens, mask, config)
    other = Embedding.fit(tokens, mask, EmbeddingConfig(dim=8, method="random"))
    assert first.matrix.shape == (5, 8)
    np.testing.assert_array_equal(first.matrix, again.matrix)
    assert not np.array_equal(first.matrix, other.matrix)


def test_identical_tokens_embed_to_the_centre():
    """When every token is the same the scale is 1 and all tokens map to 0."""
    tokens = np.full((3, 2, 4), 0.7)
    mask = np.ones((3, 2), dtype=bool)
    embedding = Embedding.fit(tokens, mask, EmbeddingConfig(dim=2))
    assert embedding.scale == 1.0
    np.testing.assert_allclose(embedding(tokens, mask), 0.0, atol=1e-15)


def test_pca_dim_above_token_dim(padded):
    """pca cannot produce more features than the tokens have."""
    tokens, mask = padded
    with pytest.raises(
        ConfigError,
        match=r"`dim` must be <= 5 .* got 6; use --embedding random or a smaller --dim",
    ):
        Embedding.fit(tokens, mask, EmbeddingConfig(dim=6, method="pca"))


def test_too_few_real_tokens_for_pca():
    """pca needs at least dim real tokens."""
    tokens = np.ones((1, 3, 4))
    mask = np.array([[True, False, False]])
    with pytest.raises(DataError, match="must see at least 2 real tokens, got 1"):
        Embedding.fit(tokens, mask, EmbeddingConfig(dim=2))


def test_token_dim_mismatch_at_call_time():
    """Embedding tokens with another feature count than at fit time is rejected."""
    dataset = digits()
    embedding = Embedding.fit(dataset.tokens, dataset.mask, EmbeddingConfig())
    message = (
        "tokens have 3 features per token but the embedding was fitted on 8; "
        "embed data with the features of the training set."
    )
    with pytest.raises(DataError, match=re.escape(message)):
        embedding(np.ones((2, 4, 3)), np.ones((2, 4), dtype=bool))


def test_mask_shape_mismatch(padded):
    """A mask whose shape differs from the tokens' is rejected."""
    tokens, mask = padded
    embedding = Embedding.fit(tokens, mask, EmbeddingConfig(dim=2))
    with pytest.raises(DataError, match="`tokens` and `mask` must have shapes"):
        embedding(tokens, mask[:, :3])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dim": 0}, "`dim` must be >= 1, got 0"),
        (
            {"method": "umap"},
            "`method` (--embedding) must be 'auto', 'pca' or 'random', got 'umap'",
        ),
        ({"space": "cube"}, "`space` must be 'ball' or 'sphere', got 'cube'"),
        ({"radius": 0.0}, "`radius` must be positive and finite, got 0.0"),
        ({"radius": math.inf}, "`radius` must be positive and finite, got inf"),
        ({"position_dim": 3}, "`position_dim` must be even and >= 2, got 3"),
    ],
)
def test_config_rejects_bad_options(options, message):
    """Every out-of-range option raises a ConfigError naming it."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        EmbeddingConfig(**options)


def test_dict_roundtrip_gives_identical_outputs(padded):
    """to_dict, JSON and from_dict rebuild an embedding with bit-identical output."""
    tokens, mask = padded
    config = EmbeddingConfig(dim=3, space="sphere", radius=1.5)
    embedding = Embedding.fit(tokens, mask, config)
    rebuilt = Embedding.from_dict(json.loads(json.dumps(embedding.to_dict())))
    np.testing.assert_array_equal(rebuilt(tokens, mask), embedding(tokens, mask))
    assert (rebuilt.space, rebuilt.radius, rebuilt.scale) == (
        "sphere",
        1.5,
        embedding.scale,
    )


def test_from_dict_missing_key(padded):
    """An exported embedding without all its keys is rejected."""
    tokens, mask = padded
    data = Embedding.fit(tokens, mask, EmbeddingConfig(dim=2)).to_dict()
    del data["scale"]
    with pytest.raises(DataError, match="got none for scale; export it again"):
        Embedding.from_dict(data)


# Projection onto X.

points_strategy = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    elements=st.floats(-1e6, 1e6, allow_nan=False),
)
radius_strategy = st.floats(0.1, 10.0)


@settings(deadline=None)
@given(points=points_strategy, radius=radius_strategy)
def test_ball_projection_is_idempotent_and_lands_in_the_ball(points, radius):
    """Projecting onto the ball twice changes nothing, and the result is in the ball."""
    once = project(torch.from_numpy(points), space="ball", radius=radius)
    twice = project(once, space="ball", radius=radius)
    torch.testing.assert_close(twice, once, rtol=1e-12, atol=1e-12)
    assert torch.linalg.vector_norm(once, dim=-1).max() <= radius * (1 + 1e-12)


@settings(deadline=None)
@given(first=points_strategy, shift=points_strategy, radius=radius_strategy)
def test_ball_projection_is_non_expansive(first, shift, radius):
    """The ball projection never increases the distance between two points."""
    rows, dim = min(first.shape[0], shift.shape[0]), min(first.shape[1], shift.shape[1])
    first = torch.from_numpy(first[:rows, :dim])
    second = first + torch.from_numpy(shift[:rows, :dim])
    distance = torch.linalg.vector_norm(first - second, dim=-1)
    projected = project(first, space="ball", radius=radius) - project(
        second, space="ball", radius=radius
    )
    assert torch.all(
        torch.linalg.vector_norm(projected, dim=-1) <= distance * (1 + 1e-12) + 1e-12
    )


@settings(deadline=None)
@given(points=points_strategy, radius=radius_strategy)
def test_sphere_projection_is_idempotent_and_on_the_sphere(points, radius):
    """Projecting onto the sphere gives norm radius, and again changes nothing."""
    once = project(torch.from_numpy(points), space="sphere", radius=radius)
    torch.testing.assert_close(
        torch.linalg.vector_norm(once, dim=-1),
        torch.full(points.shape[:1], radius, dtype=torch.float64),
        rtol=1e-12,
        atol=0.0,
    )
    twice = project(once, space="sphere", radius=radius)
    torch.testing.assert_close(twice, once, rtol=1e-12, atol=1e-12)


def test_ball_projection_keeps_inner_points_and_shape():
    """Points inside the ball stay put; batch dimensions are preserved."""
    points = torch.full((2, 3, 4), 0.1, dtype=torch.float64)
    result = project(points, space="ball", radius=1.0)
    assert result.shape == (2, 3, 4) and result.dtype == torch.float64
    torch.testing.assert_close(result, points, rtol=0.0, atol=0.0)


def test_sphere_projection_of_zero_is_the_first_axis():
    """The zero vector goes to radius times the first basis vector."""
    result = project(torch.zeros(2, 3, dtype=torch.float64), space="sphere", radius=2)
    expected = torch.tensor([[2.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    torch.testing.assert_close(result, expected, rtol=0.0, atol=0.0)


def test_project_unknown_space():
    """project rejects an unknown space."""
    with pytest.raises(ConfigError, match="`space` must be 'ball' or 'sphere'"):
        project(torch.zeros(1, 2), space="torus", radius=1.0)


# Positional encoding.


def test_positional_encoding_known_values():
    """Two positions, two frequencies: a quarter turn and a half turn."""
    expected = [
        [1.0, 0.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 0.0],
    ]
    encoding = positional_encoding(2, 4)
    assert encoding.shape == (2, 4) and encoding.dtype == np.float64
    np.testing.assert_allclose(encoding, expected, atol=1e-15)


def test_positional_encoding_general_formula():
    """Columns 2k-2 and 2k-1 are cos and sin of pi k p / n."""
    encoding = positional_encoding(7, 6)
    for position in range(7):
        for k in (1, 2, 3):
            angle = math.pi * k * position / 7
            assert encoding[position, 2 * k - 2] == pytest.approx(math.cos(angle))
            assert encoding[position, 2 * k - 1] == pytest.approx(math.sin(angle))


@pytest.mark.parametrize("dim", [0, 3])
def test_positional_encoding_bad_dim(dim):
    """An odd or too small encoding size is rejected."""
    with pytest.raises(ConfigError, match=f"`dim` must be even and >= 2, got {dim}"):
        positional_encoding(5, dim)


def test_positional_encoding_no_tokens():
    """Zero positions are rejected."""
    with pytest.raises(ConfigError, match="`n_tokens` must be >= 1, got 0"):
        positional_encoding(0, 2)
