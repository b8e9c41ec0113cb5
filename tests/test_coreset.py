"""Tests of ocformer.coreset: lattice rounding and the reduced training measure."""

import re

import numpy as np
import ot
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocformer.coreset import largest_remainder, reduce_measure
from ocformer.errors import ConfigError

RADIUS = 1.0


def random_measure(n_sequences=12, n_tokens=3, dim=2, *, n_classes=2, seed=0):
    """Distinct sequences in the unit ball and their targets (classes or reals)."""
    rng = np.random.default_rng(seed)
    tokens = rng.uniform(-0.5, 0.5, size=(n_sequences, n_tokens, dim))
    if n_classes is None:
        return tokens, rng.normal(size=n_sequences)
    return tokens, np.arange(n_sequences) % n_classes


def reference_distance(tokens, targets, coreset, *, n_classes):
    """W1 between the full and the reduced measure, by POT on all M x M pairs.

    The ground metric is written out pair by pair: mean token distance at equal
    positions plus |y - y'| (regression) or 2R for a class mismatch.
    """
    n_sequences = len(tokens)
    ground = np.zeros((n_sequences, n_sequences))
    for i in range(n_sequences):
        for j in range(n_sequences):
            gaps = [
                np.linalg.norm(tokens[i, p] - tokens[j, p])
                for p in range(tokens.shape[1])
            ]
            if n_classes is None:
                label = abs(targets[i] - targets[j])
            else:
                label = 2 * RADIUS * (targets[i] != targets[j])
            ground[i, j] = np.mean(gaps) + label
    reduced = np.zeros(n_sequences)
    np.add.at(reduced, coreset.index, coreset.counts / coreset.total)
    return ot.emd2(np.full(n_sequences, 1 / n_sequences), reduced, ground)


def test_largest_remainder_hand_example():
    """0.5, 0.3, 0.2 of 4 floor to 2, 1, 0; the largest remainder 0.8 gets the unit."""
    assert largest_remainder(np.array([0.5, 0.3, 0.2]), 4).tolist() == [2, 1, 1]


def test_largest_remainder_ties_go_to_the_lowest_index():
    """Equal remainders give the left-over units to the first shares."""
    assert largest_remainder(np.full(3, 1 / 3), 2).tolist() == [1, 1, 0]


@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
    st.integers(1, 200),
)
def test_largest_remainder_sums_to_total(sizes, total):
    """Rounded counts sum to the total and each is its share floored or ceiled."""
    shares = np.array(sizes) / sum(sizes)

    counts = largest_remainder(shares, total)

    assert counts.sum() == total
    assert np.all(np.abs(counts - shares * total) < 1 + 1e-9)


@pytest.mark.parametrize("n_classes", [2, 3, None])
def test_reduce_measure_keeps_at_most_n_real_atoms(n_classes):
    """At most N atoms, each a distinct training sequence, with counts summing to N."""
    tokens, targets = random_measure(30, n_classes=n_classes)

    coreset = reduce_measure(
        tokens, targets, atoms=7, n_classes=n_classes, radius=RADIUS
    )

    assert len(coreset.index) <= 7 and coreset.total == 7
    assert coreset.counts.sum() == 7 and np.all(coreset.counts >= 1)
    assert len(set(coreset.index.tolist())) == len(coreset.index)
    assert np.all((coreset.index >= 0) & (coreset.index < 30))


def test_reduce_measure_never_mixes_classes():
    """Sequences that differ only by class keep one atom per class, not a shared one."""
    tokens = np.repeat(random_measure(1)[0], 10, axis=0)  # ten equal sequences
    targets = np.array([0] * 5 + [1] * 5)

    coreset = reduce_measure(tokens, targets, atoms=2, n_classes=2, radius=RADIUS)

    assert sorted(targets[coreset.index].tolist()) == [0, 1]
    assert coreset.counts.tolist() == [1, 1]
    assert coreset.distance == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_classes", [2, None])
def test_reduce_measure_distance_matches_pot(n_classes):
    """The reported W1 equals POT's on the full pairwise ground metric."""
    tokens, targets = random_measure(12, n_classes=n_classes, seed=3)

    coreset = reduce_measure(
        tokens, targets, atoms=4, n_classes=n_classes, radius=RADIUS
    )

    expected = reference_distance(tokens, targets, coreset, n_classes=n_classes)
    assert coreset.distance == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert coreset.distance > 0


@pytest.mark.parametrize("n_classes", [2, None])
def test_reduce_measure_to_every_sequence_is_exact(n_classes):
    """With N = M distinct sequences every sequence is kept once and W1 is 0."""
    tokens, targets = random_measure(12, n_classes=n_classes, seed=5)

    coreset = reduce_measure(
        tokens, targets, atoms=12, n_classes=n_classes, radius=RADIUS
    )

    assert sorted(coreset.index.tolist()) == list(range(12))
    assert coreset.counts.tolist() == [1] * 12
    assert coreset.distance == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("atoms", [0, 13])
def test_reduce_measure_rejects_atoms_out_of_range(atoms):
    """atoms below 1 or above M raises a ConfigError with the range and the fix."""
    tokens, targets = random_measure(12)
    message = (
        "`atoms` must be between 1 and the number of training sequences (12), got "
        f"{atoms}; omit it to keep every sequence."
    )

    with pytest.raises(ConfigError, match=re.escape(message)):
        reduce_measure(tokens, targets, atoms=atoms, n_classes=2, radius=RADIUS)
