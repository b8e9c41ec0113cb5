"""Tests of the particle system: LayerWeights and one encoder layer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ocformer.actions import family_weights
from ocformer.dynamics import (
    WEIGHT_NAMES,
    LayerWeights,
    _project_into,
    layer_step,
    run_layers,
)
from ocformer.embedding import positional_encoding, project
from ocformer.errors import ConfigError, DataError

DIM, POSITION_DIM, KEY_DIM, HIDDEN = 3, 4, 5, 6


def random_weights(actions, *, seed=0, dtype=torch.float64):
    """Random LayerWeights with A = `actions`, small enough for float32 accuracy."""
    generator = torch.Generator().manual_seed(seed)
    features = DIM + POSITION_DIM

    def draw(*shape):
        return (0.7 * torch.randn(actions, *shape, generator=generator)).to(dtype)

    return LayerWeights(
        query=draw(KEY_DIM, features),
        key=draw(KEY_DIM, features),
        value=draw(DIM, DIM),
        mlp_in=draw(HIDDEN, DIM),
        mlp_bias=draw(HIDDEN),
        mlp_out=draw(DIM, HIDDEN),
    )


def encodings_for(n_tokens, dtype=torch.float64):
    """The library's positional encodings, shape (n_tokens, POSITION_DIM)."""
    return torch.from_numpy(positional_encoding(n_tokens, POSITION_DIM)).to(dtype)


def reference_project(points, space, radius):
    """Projection onto X written out independently of ocformer.embedding."""
    norms = torch.linalg.vector_norm(points, dim=-1, keepdim=True)
    if space == "ball":
        return points * torch.clamp(radius / norms, max=1.0)
    return radius * points / norms


def reference_layer(tokens, mask, encodings, weights, *, step, space, radius):
    """One layer per action, attention by torch's scaled_dot_product_attention."""
    outputs = []
    for action in range(len(weights)):
        features = torch.cat(
            [tokens, encodings.expand(tokens.shape[0], -1, -1)], dim=-1
        )
        queries = features @ weights.query[action].T
        keys = features @ weights.key[action].T
        values = tokens @ weights.value[action].T
        attended = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask[:, None, :]
        )
        moved = tokens + step * attended
        hidden = torch.relu(moved @ weights.mlp_in[action].T + weights.mlp_bias[action])
        moved = moved + step * hidden @ weights.mlp_out[action].T
        projected = reference_project(moved, space, radius)
        outputs.append(torch.where(mask[..., None], projected, 0.0))
    return torch.stack(outputs)


def random_batch(batch=4, n_tokens=5, *, seed=1, space="ball", radius=0.8):
    """Tokens in X of shape (batch, n_tokens, DIM) and a mask with some padding."""
    generator = torch.Generator().manual_seed(seed)
    tokens = reference_project(
        torch.randn(batch, n_tokens, DIM, generator=generator, dtype=torch.float64),
        space,
        radius,
    )
    mask = torch.ones(batch, n_tokens, dtype=torch.bool)
    if batch >= 3:
        mask[1, 3:] = False
        mask[2, 1:] = False
    tokens = torch.where(mask[..., None], tokens, 0.0)
    return tokens, mask


@pytest.mark.parametrize("space", ["ball", "sphere"])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-5)]
)
def test_layer_step_matches_attention_reference(space, dtype, tolerance):
    """layer_step equals a reference built on scaled_dot_product_attention."""
    tokens, mask = random_batch(space=space)
    tokens = tokens.to(dtype)
    encodings = encodings_for(tokens.shape[1], dtype=dtype)
    weights = random_weights(3, dtype=dtype)

    got = layer_step(
        tokens[None], mask, encodings, weights, step=0.7, space=space, radius=0.8
    )
    expected = reference_layer(
        tokens, mask, encodings, weights, step=0.7, space=space, radius=0.8
    )

    assert got.shape == (3, *tokens.shape)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=0.0, atol=tolerance)


def test_leading_one_broadcasts_over_actions():
    """A leading 1 on tokens equals applying each action to the tokens separately."""
    tokens, mask = random_batch()
    encodings = encodings_for(tokens.shape[1])
    weights = random_weights(4)
    options = {"step": 0.5, "space": "ball", "radius": 0.8}

    shared = layer_step(tokens[None], mask, encodings, weights, **options)
    for action in range(len(weights)):
        alone = layer_step(
            tokens[None], mask, encodings, weights.select(action), **options
        )
        torch.testing.assert_close(shared[action], alone[0], rtol=0.0, atol=0.0)
    repeated = layer_step(
        tokens.expand(4, -1, -1, -1), mask, encodings, weights, **options
    )
    torch.testing.assert_close(shared, repeated, rtol=0.0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_tokens", [1, 5, 9])
def test_action_result_does_not_depend_on_the_batch(dtype, n_tokens):
    """One action on one sequence gives the same bits alone, shared or paired."""
    batch, actions = 300, 4  # more sequences than one tile holds
    generator = torch.Generator().manual_seed(n_tokens)
    tokens = reference_project(
        torch.randn(batch, n_tokens, DIM, generator=generator, dtype=torch.float64),
        "ball",
        0.8,
    ).to(dtype)
    mask = torch.rand(batch, n_tokens, generator=generator) > 0.3
    mask[:, 0] = True
    mask[7] = False  # a sequence of padding only
    encodings = encodings_for(n_tokens, dtype)
    weights = random_weights(actions, dtype=dtype)
    options = {"step": 0.7, "space": "ball", "radius": 0.8}

    shared = layer_step(tokens[None], mask, encodings, weights, **options)
    for action, sequence in [(0, 0), (3, 7), (1, 150), (2, 299), (3, 101)]:
        alone = layer_step(
            tokens[None, sequence : sequence + 1],
            mask[sequence : sequence + 1],
            encodings,
            weights.select(action),
            **options,
        )
        assert torch.equal(alone[0, 0], shared[action, sequence])

    # Each action on its own copy of a slice of the batch, in a different order.
    order = torch.randperm(actions, generator=generator)
    paired = layer_step(
        tokens[None, 40:90].expand(actions, -1, -1, -1),
        mask[40:90],
        encodings,
        weights.select(order),
        **options,
    )
    assert torch.equal(paired, shared[order, 40:90])


@pytest.mark.parametrize("space", ["ball", "sphere"])
def test_layer_projection_equals_embedding_project(space):
    """The layer's projection onto X is embedding.project, bit for bit."""
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(500, DIM, generator=generator, dtype=torch.float64)
    points[:3] = torch.tensor([[0.0] * DIM, [0.8] + [0.0] * (DIM - 1), [1e-300] * DIM])
    out = torch.empty_like(points)
    _project_into(points, out, space=space, radius=0.8)
    assert torch.equal(out, project(points, space=space, radius=0.8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_step_runs_on_the_tokens_device(dtype):
    """On CUDA the layer stays on the device and matches the CPU result."""
    tokens, mask = random_batch()
    tokens = tokens.to(dtype)
    encodings = encodings_for(tokens.shape[1], dtype)
    weights = random_weights(3, dtype=dtype)
    options = {"step": 0.7, "space": "ball", "radius": 0.8}

    on_cpu = layer_step(tokens[None], mask, encodings, weights, **options)
    on_gpu = layer_step(
        tokens[None].cuda(), mask.cuda(), encodings.cuda(), weights, **options
    )
    assert on_gpu.device.type == "cuda"
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0.0, atol=tolerance)


def test_layer_step_rejects_unknown_space():
    """An unknown token set is a ConfigError, whatever path the layer takes."""
    tokens, mask = random_batch()
    with pytest.raises(ConfigError, match="space"):
        layer_step(
            tokens[None],
            mask,
            encodings_for(tokens.shape[1]),
            random_weights(1),
            step=0.5,
            space="cube",
            radius=1.0,
        )


def test_padded_outputs_are_zero():
    """Padded tokens come out as exact zeros."""
    tokens, mask = random_batch()
    out = layer_step(
        tokens[None],
        mask,
        encodings_for(tokens.shape[1]),
        random_weights(2),
        step=0.5,
        space="sphere",
        radius=1.0,
    )
    assert torch.all(out[:, ~mask] == 0)
    assert torch.all(out[:, mask].norm(dim=-1) > 0)


def test_padded_token_values_do_not_reach_real_tokens():
    """Changing what padded tokens hold changes no output."""
    tokens, mask = random_batch()
    encodings = encodings_for(tokens.shape[1])
    weights = random_weights(3)
    options = {"step": 0.5, "space": "ball", "radius": 0.8}
    garbage = tokens.clone()
    garbage[~mask] = 1e6 * torch.randn(int((~mask).sum()), DIM, dtype=torch.float64)

    clean = layer_step(tokens[None], mask, encodings, weights, **options)
    dirty = layer_step(garbage[None], mask, encodings, weights, **options)
    torch.testing.assert_close(clean, dirty, rtol=0.0, atol=0.0)


def family_layer(position):
    """A layer of the family with the given position weight and a nonzero MLP."""
    row = np.array([[2.0, position, 1.0, 0.3, 0.5]])
    return family_weights(row, dim=DIM, position_dim=POSITION_DIM)


def test_position_makes_order_matter():
    """With a nonzero position weight, permuting tokens changes the pooled output."""
    tokens, _ = random_batch(batch=1, n_tokens=6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    encodings = encodings_for(6)
    permuted = tokens[:, [3, 0, 5, 1, 4, 2]]
    options = {"step": 0.8, "space": "ball", "radius": 0.8}

    weights = family_layer(position=2.0)
    pooled = layer_step(tokens[None], mask, encodings, weights, **options).mean(dim=2)
    shuffled = layer_step(permuted[None], mask, encodings, weights, **options)
    assert (pooled - shuffled.mean(dim=2)).abs().max() > 1e-3


def test_without_position_layer_is_permutation_equivariant():
    """With position 0, permuting tokens permutes the output the same way."""
    tokens, _ = random_batch(batch=1, n_tokens=6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    encodings = encodings_for(6)
    order = [3, 0, 5, 1, 4, 2]
    options = {"step": 0.8, "space": "ball", "radius": 0.8}

    weights = family_layer(position=0.0)
    out = layer_step(tokens[None], mask, encodings, weights, **options)
    shuffled = layer_step(tokens[:, order][None], mask, encodings, weights, **options)
    torch.testing.assert_close(shuffled, out[:, :, order], rtol=0.0, atol=1e-14)


def test_run_layers_rolls_layer_step():
    """run_layers equals layer_step applied layer after layer."""
    tokens, mask = random_batch()
    encodings = encodings_for(tokens.shape[1])
    plan = [random_weights(1, seed=seed) for seed in range(3)]
    options = {"step": 0.4, "space": "sphere", "radius": 1.0}

    state = tokens[None]
    for weights in plan:
        state = layer_step(state, mask, encodings, weights, **options)
    got = run_layers(tokens, mask, encodings, plan, **options)
    torch.testing.assert_close(got, state[0], rtol=0.0, atol=0.0)


def test_run_layers_rejects_several_actions_per_layer():
    """A plan layer with more than one action is a ConfigError."""
    tokens, mask = random_batch()
    with pytest.raises(ConfigError, match=r"`plan_weights\[0\]` must hold exactly one"):
        run_layers(
            tokens,
            mask,
            encodings_for(tokens.shape[1]),
            [random_weights(2)],
            step=0.5,
            space="ball",
            radius=1.0,
        )


def test_layer_step_rejects_token_dim_mismatch():
    """Tokens with the wrong feature count are a DataError naming dim."""
    tokens, mask = random_batch()
    with pytest.raises(DataError, match=r"`tokens` must have dim=3 features.*got 2"):
        layer_step(
            tokens[None, ..., :2],
            mask,
            encodings_for(tokens.shape[1]),
            random_weights(2),
            step=0.5,
            space="ball",
            radius=1.0,
        )


def test_layer_step_rejects_wrong_action_count():
    """Tokens whose leading axis is neither 1 nor A are a DataError."""
    tokens, mask = random_batch()
    with pytest.raises(DataError, match=r"with 3 actions, got \(2, 4, 5, 3\)"):
        layer_step(
            tokens.expand(2, -1, -1, -1),
            mask,
            encodings_for(tokens.shape[1]),
            random_weights(3),
            step=0.5,
            space="ball",
            radius=1.0,
        )


def test_layer_step_rejects_nonpositive_step():
    """A step size of 0 is a ConfigError."""
    tokens, mask = random_batch()
    with pytest.raises(ConfigError, match=r"`step` must be a positive number, got 0"):
        layer_step(
            tokens[None],
            mask,
            encodings_for(tokens.shape[1]),
            random_weights(1),
            step=0,
            space="ball",
            radius=1.0,
        )


def test_layer_weights_sizes():
    """The size properties read the tensor shapes."""
    weights = random_weights(2)
    assert len(weights) == 2
    assert (weights.dim, weights.position_dim) == (DIM, POSITION_DIM)
    assert (weights.key_dim, weights.hidden) == (KEY_DIM, HIDDEN)


@pytest.mark.parametrize(
    ("index", "picked"),
    [
        (1, [1]),
        (-1, [3]),
        (np.int64(2), [2]),
        (slice(1, 3), [1, 2]),
        ([3, 0], [3, 0]),
        (torch.tensor([0, 2]), [0, 2]),
        ([True, False, False, True], [0, 3]),
    ],
)
def test_select_keeps_action_axis(index, picked):
    """select returns the chosen actions with the action axis kept."""
    weights = random_weights(4)
    chosen = weights.select(index)
    assert len(chosen) == len(picked)
    for name in WEIGHT_NAMES:
        assert torch.equal(getattr(chosen, name), getattr(weights, name)[picked])


def test_select_rejects_out_of_range():
    """An int index beyond the actions is an IndexError."""
    with pytest.raises(IndexError, match="action 4 out of range for 4"):
        random_weights(4).select(4)


def test_flatten_concatenates_in_fixed_order():
    """flatten puts every weight of an action in one row, in WEIGHT_NAMES order."""
    weights = random_weights(3)
    flat = weights.flatten()
    features = DIM + POSITION_DIM
    sizes = [KEY_DIM * features] * 2 + [DIM * DIM, HIDDEN * DIM, HIDDEN, DIM * HIDDEN]
    assert flat.shape == (3, sum(sizes))
    pieces = flat.split(sizes, dim=1)
    for name, piece in zip(WEIGHT_NAMES, pieces, strict=True):
        assert torch.equal(piece, getattr(weights, name).reshape(3, -1))


def test_tensors_roundtrip_with_prefix():
    """from_tensors(to_tensors(prefix)) gives back the same weights."""
    weights = random_weights(2)
    tensors = weights.to_tensors(prefix="layer0.")
    assert sorted(tensors) == sorted(f"layer0.{name}" for name in WEIGHT_NAMES)
    again = LayerWeights.from_tensors(tensors, prefix="layer0.")
    assert torch.equal(again.flatten(), weights.flatten())


def test_from_tensors_names_missing_tensor():
    """A missing tensor is a DataError listing what is missing."""
    tensors = random_weights(1).to_tensors()
    del tensors["mlp_out"]
    with pytest.raises(DataError, match=r"missing \['mlp_out'\]"):
        LayerWeights.from_tensors(tensors)


def test_layer_weights_rejects_mismatched_shapes():
    """A value matrix of the wrong size is a ConfigError naming the tensor."""
    tensors = random_weights(2).to_tensors()
    tensors["mlp_bias"] = torch.zeros(2, HIDDEN + 1, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"`mlp_bias` must have shape \(2, 6\)"):
        LayerWeights(**tensors)


def test_layer_weights_rejects_mixed_dtypes():
    """Weights in two dtypes are a ConfigError."""
    tensors = random_weights(2).to_tensors()
    tensors["value"] = tensors["value"].float()
    with pytest.raises(ConfigError, match="all weights must share one dtype"):
        LayerWeights(**tensors)
