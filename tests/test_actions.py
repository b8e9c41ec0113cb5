"""Tests of the finite action sets: layer family, grid, ternary and codebook."""

import itertools
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ocformer.actions import (
    DEFAULT_GRID,
    PARAMETERS,
    ActionSet,
    family_weights,
    grid_actions,
    load_codebook,
    save_codebook,
    ternary_actions,
)
from ocformer.dynamics import WEIGHT_NAMES, layer_step
from ocformer.embedding import positional_encoding, project
from ocformer.errors import ConfigError, DataError

ROWS = np.array(
    [
        [1.0, 2.0, 1.0, 0.0, 1.0],
        [4.0, -2.0, 0.5, 0.7, -1.0],
        [0.3, 0.0, 2.0, -1.2, 0.0],
        [0.0, 0.4, 1.0, math.pi / 2, 3.0],
    ]
)


def quarter_turn(vectors):
    """Apply J (a quarter turn in each coordinate pair) to vectors (..., even)."""
    pairs = vectors.reshape(*vectors.shape[:-1], -1, 2)
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1)
    return turned.reshape(vectors.shape)


def test_family_score_is_temperature_plus_position_form():
    """<Q z, K z'> / sqrt(key_dim) = temperature <x, x'> + position <e, J e'>."""
    dim, position_dim = 3, 4
    weights = family_weights(ROWS, dim=dim, position_dim=position_dim)
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 7, dim + position_dim, generator=generator).double()

    queries = left @ weights.query.transpose(1, 2)  # (L, 7, key_dim)
    keys = right @ weights.key.transpose(1, 2)
    scores = (queries * keys).sum(-1) / math.sqrt(weights.key_dim)  # (L, 7)

    tokens = (left[:, :dim] * right[:, :dim]).sum(-1)
    positions = (left[:, dim:] * quarter_turn(right[:, dim:])).sum(-1)
    temperature, position = torch.from_numpy(ROWS[:, :2]).T
    expected = temperature[:, None] * tokens + position[:, None] * positions
    torch.testing.assert_close(scores, expected, rtol=0.0, atol=1e-12)


def test_quarter_turn_tells_before_from_after():
    """With the library's encodings, <e_p, J e_q> = sum_k sin(pi k (p - q) / n)."""
    n_tokens, position_dim = 6, 4
    encodings = torch.from_numpy(positional_encoding(n_tokens, position_dim))
    form = encodings @ quarter_turn(encodings).T  # (n, n): entry [p, q]

    offsets = torch.arange(n_tokens)[:, None] - torch.arange(n_tokens)[None]
    frequencies = torch.arange(1, position_dim // 2 + 1, dtype=torch.float64)
    angles = math.pi * frequencies * offsets[..., None] / n_tokens
    torch.testing.assert_close(form, angles.sin().sum(-1), rtol=0.0, atol=1e-12)
    torch.testing.assert_close(form, -form.T, rtol=0.0, atol=1e-15)


def test_family_value_rotates_first_plane():
    """value = value_gain * rotation by `angle` in the plane of coordinates 0 and 1."""
    weights = family_weights(ROWS, dim=3, position_dim=2)
    gain, angle = ROWS[1, 2], ROWS[1, 3]
    expected = gain * np.array(
        [
            [math.cos(angle), -math.sin(angle), 0.0],
            [math.sin(angle), math.cos(angle), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(weights.value[1].numpy(), expected, atol=1e-15)


def test_family_mlp_is_soft_threshold():
    """W_out relu(W_in y + b) = mlp_gain * soft_threshold(y, threshold)."""
    weights = family_weights(ROWS, dim=3, position_dim=2, threshold=0.3)
    points = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(4, 3)

    hidden = torch.relu(
        points @ weights.mlp_in.transpose(1, 2) + weights.mlp_bias[:, None]
    )
    got = hidden @ weights.mlp_out.transpose(1, 2)  # (L, 4, 3)
    shrunk = points.sign() * (points.abs() - 0.3).clamp_min(0.0)
    expected = torch.from_numpy(ROWS[:, 4])[:, None, None] * shrunk
    torch.testing.assert_close(got, expected, rtol=0.0, atol=1e-15)


def test_family_rejects_negative_temperature():
    """A negative temperature is a ConfigError."""
    row = np.array([-1.0, 0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ConfigError, match=r"`temperature` must be >= 0, got -1\.0"):
        family_weights(row, dim=2, position_dim=2)


def test_family_rejects_angle_in_one_dimension():
    """A nonzero angle with dim 1 is a ConfigError."""
    row = np.array([1.0, 0.0, 1.0, 0.5, 1.0])
    with pytest.raises(ConfigError, match=r"`angle` must be 0 when dim is 1, got 0\.5"):
        family_weights(row, dim=1, position_dim=2)


def test_grid_is_product_in_parameter_order():
    """Grid actions follow the product of PARAMETERS, the first varying slowest."""
    grid = {"temperature": (1.0, 2.0, 3.0), "position": (0.0, 1.0)}
    actions = grid_actions(dim=2, position_dim=2, grid=grid, identity=False)

    values = [grid.get(name, DEFAULT_GRID[name]) for name in PARAMETERS]
    expected = np.array(list(itertools.product(*values)))
    assert len(actions) == 3 * 2 * 2 * 2 * 2
    np.testing.assert_array_equal(actions.parameters, expected)
    assert actions.parameter_names == PARAMETERS
    direct = family_weights(expected, dim=2, position_dim=2)
    assert torch.equal(actions.weights.flatten(), direct.flatten())


def test_default_grid_has_the_identity_and_thirty_two_actions():
    """DEFAULT_GRID gives 32 actions, after the identity layer as action 0."""
    actions = grid_actions(dim=2, position_dim=2)
    assert len(actions) == 33
    assert actions.family == "grid"
    assert actions.describe(0) == dict.fromkeys(PARAMETERS, 0.0)


def test_identity_action_leaves_tokens_in_place():
    """Action 0 of a grid moves no token of the ball."""
    actions = grid_actions(dim=3, position_dim=2)
    tokens = project(
        torch.randn(1, 5, 4, 3, dtype=torch.float64), space="ball", radius=1.0
    )
    mask = torch.ones(5, 4, dtype=torch.bool)
    encodings = torch.from_numpy(positional_encoding(4, 2))
    moved = layer_step(
        tokens,
        mask,
        encodings,
        actions.weights.select([0]),
        step=0.5,
        space="ball",
        radius=1.0,
    )
    torch.testing.assert_close(moved, tokens, rtol=0.0, atol=1e-15)


def test_grid_holding_an_identity_layer_gets_no_second_one():
    """A grid with both gains 0 somewhere is left as it is."""
    grid = {"value_gain": (0.0, 1.0), "mlp_gain": (0.0,)}
    actions = grid_actions(dim=2, position_dim=2, grid=grid)
    assert len(actions) == 2 * 2 * 2 * 2


def test_grid_rejects_unknown_parameter():
    """An unknown grid name is a ConfigError listing the parameter names."""
    with pytest.raises(ConfigError, match="unknown parameter 'gain'; use names from"):
        grid_actions(dim=2, position_dim=2, grid={"gain": (1.0,)})


def test_grid_rejects_repeated_values():
    """A value listed twice is a ConfigError."""
    with pytest.raises(ConfigError, match=r"no repeats, got \(1\.0, 1\.0\)"):
        grid_actions(dim=2, position_dim=2, grid={"temperature": (1.0, 1.0)})


def test_grid_covering_radius_shrinks_when_refined():
    """Adding values inside the same box lowers the covering radius."""
    coarse = grid_actions(
        dim=2, position_dim=2, grid={"temperature": (1.0, 4.0)}, identity=False
    )
    fine = grid_actions(
        dim=2,
        position_dim=2,
        grid={"temperature": (1.0, 2.0, 3.0, 4.0)},
        identity=False,
    )
    assert 0 < fine.covering_radius < coarse.covering_radius


def test_grid_covering_radius_of_single_point_is_zero():
    """A grid whose box is one point has covering radius 0."""
    grid = {name: (DEFAULT_GRID[name][0],) for name in PARAMETERS}
    actions = grid_actions(dim=2, position_dim=2, grid=grid, identity=False)
    assert len(actions) == 1
    assert actions.covering_radius == 0.0


def test_ternary_has_three_to_the_k_actions_and_exact_radius():
    """Ternary sets hold 3**k actions with covering radius (scale / 2) sqrt(k)."""
    entries = ["value[0, 1]", "query[2,3]", "mlp_bias[1]"]
    actions = ternary_actions(dim=2, position_dim=2, entries=entries, scale=0.5)
    assert len(actions) == 27
    assert actions.family == "ternary"
    assert actions.parameter_names == tuple(entries)
    assert actions.covering_radius == pytest.approx(0.25 * math.sqrt(3), abs=1e-15)


def test_ternary_sets_entries_and_keeps_base():
    """Each action sets its entries to its parameters; other weights are the base."""
    entries = ["value[0, 1]", "query[2,3]", "mlp_bias[1]"]
    actions = ternary_actions(dim=2, position_dim=2, entries=entries, scale=0.5)
    base = family_weights(
        np.array([1.0, 2.0, 1.0, 0.0, 1.0]), dim=2, position_dim=2
    ).to_tensors()

    expected_rows = np.array(list(itertools.product([-0.5, 0.0, 0.5], repeat=3)))
    np.testing.assert_array_equal(actions.parameters, expected_rows)
    locations = [("value", (0, 1)), ("query", (2, 3)), ("mlp_bias", (1,))]
    for name, tensor in actions.weights.to_tensors().items():
        expected = base[name].repeat(27, *[1] * (tensor.ndim - 1))
        for column, (entry_name, index) in enumerate(locations):
            if entry_name == name:
                expected[(slice(None), *index)] = torch.from_numpy(
                    expected_rows[:, column]
                )
        assert torch.equal(tensor, expected), name


def test_ternary_default_entries_are_value_diagonal():
    """By default the first min(dim, 3) diagonal entries of value vary."""
    actions = ternary_actions(dim=4, position_dim=2)
    assert actions.parameter_names == ("value[0, 0]", "value[1, 1]", "value[2, 2]")
    assert len(actions) == 27


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["values[0, 0]"], r"item 'values\[0, 0\]' must look like 'value\[0, 1\]'"),
        (["value(0, 0)"], r"item 'value\(0, 0\)' must look like"),
        (["value[0, 2]"], r"does not fit `value` of shape \(2, 2\)"),
        (["mlp_bias[0, 0]"], r"does not fit `mlp_bias` of shape \(4,\)"),
        (["value[0,0]", "value[0, 0]"], "must not repeat a weight entry"),
        (
            [f"query[0, {i}]" for i in range(9)],
            "must name 1 to 8 weight entries, got 9",
        ),
    ],
)
def test_ternary_rejects_bad_entries(entries, message):
    """Malformed, out-of-range, repeated or too many entries are ConfigErrors."""
    with pytest.raises(ConfigError, match=message):
        ternary_actions(dim=2, position_dim=2, entries=entries)


def test_ternary_rejects_unknown_base_parameter():
    """An unknown base name is a ConfigError."""
    with pytest.raises(ConfigError, match="`base` has unknown parameter 'gain'"):
        ternary_actions(dim=2, position_dim=2, base={"gain": 1.0})


def test_describe_and_norms():
    """describe names an action's parameters; norms are its weight norms."""
    actions = grid_actions(dim=2, position_dim=2)
    assert actions.describe(5) == dict(
        zip(PARAMETERS, actions.parameters[5], strict=True)
    )
    expected = np.linalg.norm(actions.weights.flatten().numpy(), axis=1)
    np.testing.assert_allclose(actions.norms(), expected, rtol=1e-15)


def test_codebook_roundtrip(tmp_path):
    """save_codebook then load_codebook gives back weights, parameters and names."""
    original = grid_actions(dim=2, position_dim=2)
    path = tmp_path / "book.safetensors"
    save_codebook(original, path)
    loaded = load_codebook(path, dim=2, position_dim=2)

    assert loaded.family == "codebook"
    assert loaded.parameter_names == PARAMETERS
    np.testing.assert_array_equal(loaded.parameters, original.parameters)
    for name in WEIGHT_NAMES:
        assert torch.equal(
            getattr(loaded.weights, name), getattr(original.weights, name)
        )
    assert loaded.covering_radius > 0


def test_codebook_without_parameters(tmp_path):
    """A codebook with weights only has no parameter columns and one action radius 0."""
    path = tmp_path / "one.safetensors"
    weights = grid_actions(dim=2, position_dim=2).weights.select(3)
    save_codebook(ActionSet(weights, np.zeros((1, 0)), (), 0.0, "grid"), path)
    loaded = load_codebook(path, dim=2, position_dim=2)
    assert loaded.parameters.shape == (1, 0)
    assert loaded.covering_radius == 0.0


def test_codebook_rejects_other_dim(tmp_path):
    """Loading with a different dim is a DataError naming tensor and shapes."""
    path = tmp_path / "book.safetensors"
    save_codebook(grid_actions(dim=2, position_dim=2), path)
    message = (
        r"codebook tensor `query` has shape \(33, 4, 4\) but dim=3, position_dim=2 "
        r"need \(33, 4, 5\); save a codebook for this dim and position_dim."
    )
    with pytest.raises(DataError, match=message):
        load_codebook(path, dim=3, position_dim=2)


def test_codebook_rejects_inconsistent_action_count(tmp_path):
    """A tensor with another number of actions is a DataError naming it."""
    path = tmp_path / "bad.safetensors"
    tensors = grid_actions(dim=2, position_dim=2).weights.to_tensors()
    tensors["mlp_out"] = tensors["mlp_out"][:3].contiguous()
    save_file(tensors, str(path))
    message = r"tensor `mlp_out` has shape \(3, 2, 4\) but .* need \(33, 2, 4\)"
    with pytest.raises(DataError, match=message):
        load_codebook(path, dim=2, position_dim=2)


def test_codebook_rejects_missing_tensor(tmp_path):
    """A file without one of the six weights is a DataError naming it."""
    path = tmp_path / "partial.safetensors"
    tensors = grid_actions(dim=2, position_dim=2).weights.to_tensors()
    del tensors["key"]
    save_file(tensors, str(path))
    with pytest.raises(DataError, match=r"partial\.safetensors has no tensor `key`"):
        load_codebook(path, dim=2, position_dim=2)


def test_codebook_rejects_unreadable_file(tmp_path):
    """A file that is not safetensors is a DataError naming the path."""
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a codebook")
    with pytest.raises(DataError, match=r"cannot read codebook .*junk\.safetensors"):
        load_codebook(path, dim=2, position_dim=2)


def test_codebook_rejects_missing_file(tmp_path):
    """A missing file is a DataError."""
    with pytest.raises(DataError, match=r"cannot read codebook .*absent\.safetensors"):
        load_codebook(tmp_path / "absent.safetensors", dim=2, position_dim=2)
