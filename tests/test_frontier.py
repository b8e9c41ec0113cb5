"""Batched canonical keys and the W1 epsilon-net over measures."""

import numpy as np
import pytest

from ocformer.frontier import MeasureNet, measure_keys
from ocformer.quantize import canonical_measure, uniform_codebook
from ocformer.solver import solve
from tests.test_solver import random_problem


@pytest.fixture
def states():
    """Eight random states of 30 atoms of 4 tokens, codes below 9."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 9, size=(8, 30, 4)).astype(np.uint8)


def test_keys_ignore_atom_order(states):
    """Permuting the atoms of every state keeps every key."""
    targets = np.arange(30) % 3
    counts = np.arange(1, 31)
    order = np.random.default_rng(1).permutation(30)
    assert measure_keys(states, targets, counts) == measure_keys(
        states[:, order], targets[order], counts[order]
    )


def test_keys_of_split_and_merged_atoms_agree():
    """Two equal atoms of weight 1 are the same measure as one atom of weight 2."""
    codes = np.array([[[1, 2], [1, 2], [0, 3]]], dtype=np.uint8)
    merged = np.array([[[0, 3], [1, 2]]], dtype=np.uint8)
    split_key = measure_keys(codes, np.array([1, 1, 0]), np.array([1, 1, 1]))
    merged_key = measure_keys(merged, np.array([0, 1]), np.array([1, 2]))
    assert split_key == merged_key


def test_keys_treat_signed_zero_targets_alike():
    """A target of -0.0 and one of 0.0 are the same value."""
    codes = np.array([[[1, 2], [0, 3]]], dtype=np.uint8)
    counts = np.ones(2, dtype=np.int64)
    assert measure_keys(codes, np.array([0.0, 1.5]), counts) == measure_keys(
        codes, np.array([-0.0, 1.5]), counts
    )


def test_keys_tell_different_measures_apart(states):
    """Distinct random states get distinct keys."""
    keys = measure_keys(states, np.zeros(30, dtype=np.int64), np.ones(30))
    assert len(set(keys)) == len(states)


def test_measure_key_is_the_batched_key(states):
    """canonical_measure's key is the batched key of the same state."""
    targets, counts = np.arange(30) % 2, np.ones(30, dtype=np.int64)
    measure = canonical_measure(states[3], targets, counts)
    assert measure.key == measure_keys(states[3:4], targets, counts)[0]


def test_net_bound_is_the_identity_coupling_cost():
    """The bound is the weighted mean distance of matched tokens."""
    book = uniform_codebook(dim=1, levels=3)  # codewords -1, 0, 1; padding code 3
    weights = np.array([0.25, 0.75])
    lengths = np.array([2, 1])
    net = MeasureNet(book.codewords, weights, lengths, epsilon=1.0)
    net.add(np.array([[0, 1], [2, 3]], dtype=np.uint8))
    other = np.array([[1, 1], [0, 3]], dtype=np.uint8)
    expected = 0.25 * (1.0 + 0.0) / 2 + 0.75 * 2.0 / 1
    np.testing.assert_allclose(net.bound(other, [0]), [expected])
    assert abs(net.mean(other) - net.mean(net.states[0])).max() <= expected


def test_net_represents_only_states_within_epsilon():
    """A state within epsilon maps to the nearest kept one, a far one does not."""
    book = uniform_codebook(dim=1, levels=5)  # spacing 0.5
    net = MeasureNet(book.codewords, np.array([0.5, 0.5]), np.array([1, 1]), 0.3)
    first = net.add(np.array([[0], [4]], dtype=np.uint8))
    second = net.add(np.array([[2], [2]], dtype=np.uint8))
    assert net.find(np.array([[1], [4]], dtype=np.uint8)) == (first, 0.25)
    assert net.find(np.array([[2], [3]], dtype=np.uint8)) == (second, 0.25)
    assert net.find(np.array([[4], [0]], dtype=np.uint8)) is None


def test_net_index_finds_what_a_linear_scan_finds():
    """With hundreds of kept states (a k-d tree in use), answers match a full scan."""
    rng = np.random.default_rng(2)
    book = uniform_codebook(dim=2, levels=4)
    net = MeasureNet(book.codewords, np.full(6, 1 / 6), np.full(6, 3), 0.4)
    for _ in range(300):
        codes = rng.integers(0, book.size, size=(6, 3)).astype(np.uint8)
        found = net.find(codes)
        bounds = net.bound(codes, list(range(len(net)))) if len(net) else np.array([])
        within = np.flatnonzero(bounds <= 0.4)
        if within.size:
            best = int(np.argmin(bounds))
            assert found == (best, float(bounds[best]))
        else:
            assert found is None
            net.add(codes)
    assert net.tree is not None


def test_tiny_measure_radius_equals_exact_merging():
    """A radius below every positive distance gives the exact DP solution."""
    problem = random_problem(
        4, n_layers=3, levels=3, temperatures=(0.5, 3.0), angles=(0.0, 1.0)
    )
    exact = solve(problem, "dp")
    netted = solve(problem, "dp", measure_radius=1e-9)
    assert (netted.value, netted.plan) == (exact.value, exact.plan)
    assert netted.states_per_layer == exact.states_per_layer


def test_large_measure_radius_keeps_one_state_per_layer():
    """A radius above the diameter of X represents every state by the first."""
    problem = random_problem(
        4, n_layers=3, levels=3, temperatures=(0.5, 3.0), angles=(0.0, 1.0)
    )
    solution = solve(problem, "dp", measure_radius=10.0)
    assert solution.states_per_layer == (1, 1, 1, 1)
    # Every distinct successor but the kept one is represented, at most L - 1 a layer.
    assert 0 < solution.represented <= 3 * (len(problem.actions) - 1)
