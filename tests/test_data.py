"""Tests of ocformer.data: datasets, built-in tasks, .npz loading and splits."""

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from statsmodels.datasets import sunspots as statsmodels_sunspots

from ocformer.data import (
    BUILTIN,
    Dataset,
    digits,
    load_dataset,
    load_npz,
    order,
    split_dataset,
    sunspots,
)
from ocformer.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures"


def make_dataset(n_sequences=6, n_tokens=3, token_dim=2, **changes):
    """A small valid classification dataset, with fields replaced by `changes`."""
    fields = {
        "name": "toy",
        "tokens": np.ones((n_sequences, n_tokens, token_dim)),
        "targets": np.arange(n_sequences) % 2,
        "mask": np.ones((n_sequences, n_tokens), dtype=bool),
        "task": "classification",
    }
    fields.update(changes)
    return Dataset(**fields)


# Built-in datasets.


def test_digits_rows_shape_and_task():
    """digits as rows: 1797 sequences of 8 tokens of 8 pixels in [0, 1], 10 classes."""
    dataset = digits()
    assert dataset.tokens.shape == (1797, 8, 8)
    assert dataset.tokens.dtype == np.float64
    assert dataset.task == "classification"
    assert dataset.classes == tuple(range(10))
    assert dataset.tokens.min() == 0.0 and dataset.tokens.max() == 1.0
    assert dataset.mask.all()


def test_digits_patches_hold_the_2x2_blocks_in_row_major_order():
    """digits as patches: token 4 * i + j is the 2x2 block at block row i, column j."""
    dataset = digits(tokens="patches")
    images = load_digits().images / 16.0
    assert dataset.tokens.shape == (1797, 16, 4)
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        block = images[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(1797, 4)
        np.testing.assert_array_equal(dataset.tokens[:, 4 * i + j], block)


def test_digits_unknown_tokens_option():
    """digits rejects a token layout other than rows or patches."""
    with pytest.raises(ConfigError, match="`tokens` must be 'rows' or 'patches'"):
        digits(tokens="columns")


def test_sunspots_windows_are_chronological_regression():
    """sunspots: windows of (value, change) / 100 predicting next year's value / 100."""
    values = statsmodels_sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    dataset = sunspots(window=8)
    assert dataset.task == "regression" and dataset.chronological
    assert dataset.tokens.shape == (len(values) - 9, 8, 2)
    for start in (0, 100, dataset.n_sequences - 1):
        years = np.arange(start + 1, start + 9)
        expected = np.stack([values[years], values[years] - values[years - 1]], axis=1)
        np.testing.assert_allclose(dataset.tokens[start], expected / 100.0)
        assert dataset.targets[start] == values[start + 9] / 100.0


def test_sunspots_window_too_long():
    """A window that leaves fewer than two sequences is rejected."""
    with pytest.raises(ConfigError, match="`window` must be between 1 and"):
        sunspots(window=400)


def test_order_labels_match_a_direct_recomputation():
    """order labels say whether the largest first feature precedes the smallest."""
    dataset = order(n_sequences=200, n_tokens=5, token_dim=3, seed=4)
    for tokens, label in zip(dataset.tokens, dataset.targets, strict=True):
        values = [float(token[0]) for token in tokens]
        assert label == int(values.index(max(values)) < values.index(min(values)))
    assert set(dataset.targets.tolist()) == {0, 1}
    assert dataset.classes == (0, 1)


def test_order_is_reproducible_by_seed():
    """The same seed draws the same dataset; another seed draws another one."""
    first, again, other = order(seed=3), order(seed=3), order(seed=4)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    np.testing.assert_array_equal(first.targets, again.targets)
    assert not np.array_equal(first.tokens, other.tokens)


def test_order_needs_two_sequences():
    """order rejects fewer than two sequences."""
    with pytest.raises(ConfigError, match="`n_sequences` must be >= 2, got 1"):
        order(n_sequences=1)


def test_order_draw_with_one_class():
    """A draw whose labels are all equal is rejected (seed 2 with 2 sequences)."""
    with pytest.raises(DataError, match="must hold both classes, got one"):
        order(n_sequences=2, seed=2)


# Dataset validation.


def test_padded_tokens_are_zeroed_and_may_hold_nan():
    """Padded tokens become 0 even when they held NaN; the input is not modified."""
    tokens = np.ones((4, 3, 2))
    tokens[1, 2] = np.nan
    mask = np.ones((4, 3), dtype=bool)
    mask[1, 2] = False
    dataset = make_dataset(n_sequences=4, tokens=tokens, mask=mask)
    np.testing.assert_array_equal(dataset.tokens[1, 2], [0.0, 0.0])
    assert np.isnan(tokens[1, 2]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tokens(bad):
    """NaN or infinite real tokens are rejected, counted, with the dataset's name."""
    tokens = np.ones((6, 3, 2))
    tokens[0, 0, 0] = tokens[3, 1, 1] = bad
    with pytest.raises(
        DataError, match="`tokens` of dataset 'toy' must be finite, got 2 NaN"
    ):
        make_dataset(tokens=tokens)


def test_no_sequence():
    """A dataset without sequences is rejected."""
    with pytest.raises(DataError, match="must contain at least one sequence, got 0"):
        make_dataset(n_sequences=0)


def test_sequence_without_real_token():
    """A sequence whose mask is all False is rejected."""
    mask = np.ones((6, 3), dtype=bool)
    mask[2] = False
    with pytest.raises(DataError, match="must have a real token, got 1 with"):
        make_dataset(mask=mask)


def test_one_class_only():
    """Classification targets of a single class are rejected."""
    with pytest.raises(DataError, match="must have at least 2 classes, got 1"):
        make_dataset(targets=np.zeros(6, dtype=np.int64))


def test_float_class_targets():
    """Classification targets must be integers."""
    with pytest.raises(DataError, match="must be integer class indices, got dtype"):
        make_dataset(targets=np.array([0.0, 1.0] * 3))


def test_class_index_outside_classes():
    """A class index without a label in `classes` is rejected."""
    with pytest.raises(DataError, match=re.escape("must lie in 0..1, got 0..2")):
        make_dataset(targets=np.array([0, 1, 2] * 2), classes=("a", "b"))


def test_non_finite_regression_targets():
    """NaN regression targets are rejected."""
    targets = np.array([0.5, np.nan, 1.0, 2.0, 3.0, 4.0])
    with pytest.raises(DataError, match="`targets` of dataset 'toy' must be finite"):
        make_dataset(targets=targets, task="regression")


def test_unknown_task():
    """A task other than classification or regression is rejected."""
    with pytest.raises(DataError, match="`task` must be 'classification' or"):
        make_dataset(task="ranking")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tokens": np.ones((6, 3))}, "`tokens` of dataset 'toy' must have shape"),
        ({"mask": np.ones((6, 4), dtype=bool)}, "`mask` of dataset 'toy' must have"),
        ({"targets": np.arange(5) % 2}, "`targets` of dataset 'toy' must have shape"),
    ],
)
def test_wrong_shapes(changes, message):
    """Tokens, mask and targets whose shapes disagree are rejected."""
    with pytest.raises(DataError, match=message):
        make_dataset(**changes)


def test_subset_keeps_classes_even_when_one_is_missing():
    """A subset keeps the class labels, so a part may lack a class."""
    dataset = make_dataset(targets=np.array([0, 1, 2, 0, 1, 2]))
    part = dataset.subset(np.array([0, 3]))
    assert part.classes == (0, 1, 2)
    assert part.n_classes == 3 and part.n_sequences == 2


# Splits.


def test_split_sizes_partition_the_dataset():
    """A split holds round(fraction * M) test sequences and the rest for training."""
    dataset = order(n_sequences=100)
    split = split_dataset(dataset, test_fraction=0.25, seed=1)
    assert split.train.n_sequences == 75 and split.test.n_sequences == 25
    rows = np.concatenate([split.train.tokens, split.test.tokens])
    assert np.unique(rows[:, 0, 0]).size == 100  # every sequence exactly once


def test_split_is_reproducible_by_seed():
    """The same seed gives the same split; another seed a different one."""
    dataset = order(n_sequences=100)
    first = split_dataset(dataset, seed=5)
    again = split_dataset(dataset, seed=5)
    other = split_dataset(dataset, seed=6)
    np.testing.assert_array_equal(first.test.tokens, again.test.tokens)
    assert not np.array_equal(first.test.tokens, other.test.tokens)


def test_split_of_sunspots_is_chronological():
    """A chronological dataset keeps its first sequences for training, whatever seed."""
    dataset = sunspots()
    for seed in (0, 1):
        split = split_dataset(dataset, test_fraction=0.2, seed=seed)
        np.testing.assert_array_equal(split.train.tokens, dataset.tokens[:240])
        np.testing.assert_array_equal(split.test.tokens, dataset.tokens[240:])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_fraction_out_of_range(fraction):
    """test_fraction outside (0, 1) is rejected."""
    with pytest.raises(ConfigError, match="`test_fraction` must be strictly between"):
        split_dataset(order(n_sequences=10), test_fraction=fraction)


def test_split_with_an_empty_part():
    """A fraction that rounds to no test sequence is rejected."""
    with pytest.raises(DataError, match="must leave both parts non-empty, got 0 test"):
        split_dataset(order(n_sequences=4, seed=1), test_fraction=0.1)


def test_split_training_part_with_one_class():
    """A training part holding a single class is rejected."""
    targets = np.array([0, 0, 0, 1])
    dataset = make_dataset(n_sequences=4, targets=targets, chronological=True)
    with pytest.raises(DataError, match="training part of dataset 'toy' must hold"):
        split_dataset(dataset, test_fraction=0.25)


# .npz files.


def test_load_npz_classification_remaps_labels():
    """Integer labels 3 and 7 become class indices 0 and 1; the mask is kept."""
    dataset = load_npz(FIXTURES / "classification.npz")
    assert dataset.name == "classification"
    assert dataset.task == "classification" and dataset.classes == (3, 7)
    np.testing.assert_array_equal(dataset.targets, [0, 1, 0, 1, 1, 0])
    assert not dataset.mask[1, 2] and dataset.mask.sum() == 16
    np.testing.assert_array_equal(dataset.tokens[4, 2], [0.0, 0.0])


def test_load_npz_regression_with_scalar_tokens():
    """Float targets give regression; (M, n) tokens get one feature per token."""
    dataset = load_npz(str(FIXTURES / "regression.npz"))
    assert dataset.task == "regression" and dataset.classes is None
    assert dataset.tokens.shape == (5, 4, 1)
    assert dataset.targets.dtype == np.float64


def test_load_npz_with_nan():
    """NaN tokens in a file are rejected, counted."""
    with pytest.raises(DataError, match="of dataset 'nan' must be finite, got 2 NaN"):
        load_npz(FIXTURES / "nan.npz")


def test_load_npz_missing_targets():
    """A file without `targets` is rejected, naming the path."""
    with pytest.raises(
        DataError, match=re.escape("no_targets.npz' must contain a `targets`")
    ):
        load_npz(FIXTURES / "no_targets.npz")


def test_load_npz_garbage_file():
    """A file that is no .npz archive is rejected, naming the path."""
    with pytest.raises(
        DataError, match=re.escape("broken.npz' must be an .npz archive")
    ):
        load_npz(FIXTURES / "broken.npz")


def test_load_npz_missing_file(tmp_path):
    """A path without a file is rejected."""
    with pytest.raises(
        DataError, match=re.escape("absent.npz' must exist, got no such file")
    ):
        load_npz(tmp_path / "absent.npz")


def test_load_npz_single_array(tmp_path):
    """A plain .npy array saved under an .npz name is rejected."""
    path = tmp_path / "single.npz"
    with path.open("wb") as file:
        np.save(file, np.ones((2, 3)))
    with pytest.raises(
        DataError, match=re.escape("single.npz' must be an .npz archive")
    ):
        load_npz(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"tokens": np.ones(4), "targets": np.ones(4)}, "`tokens` in '.*bad.npz'"),
        ({"tokens": np.ones((4, 2)), "targets": np.ones(3)}, "`targets` in '.*bad"),
        (
            {"tokens": np.ones((4, 2)), "targets": np.ones(4), "mask": np.ones(4)},
            r"`mask` in '.*bad.npz' must be a bool array of shape \(4, 2\)",
        ),
        ({"tokens": np.array([["a"]]), "targets": np.ones(1)}, "must be a real array"),
    ],
)
def test_load_npz_wrong_shapes(tmp_path, arrays, message):
    """Arrays of the wrong shape or dtype are rejected, naming the path."""
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(path)


# load_dataset.


@pytest.mark.parametrize("name", BUILTIN)
def test_load_dataset_builtin_names(name):
    """Every built-in name loads its dataset."""
    assert load_dataset(name).name == name


def test_load_dataset_npz_path():
    """A path ending in .npz loads the file."""
    assert load_dataset(str(FIXTURES / "classification.npz")).classes == (3, 7)


def test_load_dataset_unknown_name():
    """An unknown name is rejected with the list of choices."""
    message = (
        "unknown dataset 'foo'; use one of digits, sunspots, order or a path to an "
        ".npz file."
    )
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset("foo")


def test_load_dataset_order_size_and_seed():
    """For order, n_sequences and seed go to the generator."""
    dataset = load_dataset("order", seed=7, n_sequences=30)
    np.testing.assert_array_equal(dataset.tokens, order(n_sequences=30, seed=7).tokens)


def test_load_dataset_subset_is_seeded_and_ordered():
    """For other datasets, n_sequences keeps a seeded subset in the original order."""
    first = load_dataset("sunspots", seed=1, n_sequences=50)
    again = load_dataset("sunspots", seed=1, n_sequences=50)
    assert first.n_sequences == 50 and first.chronological
    np.testing.assert_array_equal(first.tokens, again.tokens)
    windows = sunspots().tokens
    positions = [
        int(np.flatnonzero((windows == window).all(axis=(1, 2)))[0])
        for window in first.tokens
    ]
    assert positions == sorted(set(positions))


@pytest.mark.parametrize(
    ("n_sequences", "message"),
    [(1, "must be >= 2, got 1"), (5000, "must be at most 1797 for dataset 'digits'")],
)
def test_load_dataset_bad_size(n_sequences, message):
    """n_sequences below 2 or above the available count is rejected."""
    with pytest.raises(ConfigError, match=f"`n_sequences` {message}"):
        load_dataset("digits", n_sequences=n_sequences)


def test_tokens_without_features_are_rejected():
    """Sequences whose tokens have no features are a clear error."""
    with pytest.raises(DataError, match=r"at least one token of at least one feature"):
        Dataset(
            name="empty-features",
            tokens=np.zeros((5, 3, 0)),
            targets=np.array([0, 1, 0, 1, 0]),
            mask=np.ones((5, 3), dtype=bool),
            task="classification",
        )
