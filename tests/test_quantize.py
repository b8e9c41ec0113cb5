"""State codebooks and canonical measures."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ocformer.errors import ConfigError
from ocformer.quantize import canonical_measure, kmeans_codebook, uniform_codebook


def test_uniform_codebook_one_dimensional_radius_is_half_spacing():
    """Three levels on [-1, 1] cover the segment within 0.5."""
    book = uniform_codebook(dim=1, levels=3)
    assert book.codewords.ravel().tolist() == [-1.0, 0.0, 1.0]
    assert book.radius == pytest.approx(0.5, abs=1e-3)
    assert book.radius <= 0.5


def test_uniform_codebook_ball_radius_within_analytic_bound():
    """On the ball the sampled radius never exceeds R sqrt(d) / (levels - 1)."""
    book = uniform_codebook(dim=2, levels=5, radius=2.0)
    bound = 2.0 * np.sqrt(2) / 4
    assert 0.5 * bound < book.radius <= bound
    assert np.linalg.norm(book.codewords, axis=1).max() <= 2.0 + 1e-12


def test_uniform_codebook_on_sphere_puts_codewords_on_sphere():
    """Sphere codewords have norm R."""
    book = uniform_codebook(dim=3, levels=3, space="sphere")
    np.testing.assert_allclose(np.linalg.norm(book.codewords, axis=1), 1.0)


def test_kmeans_codebook_with_one_code_per_distinct_token_has_zero_data_radius():
    """When every distinct token gets its own codeword, the data radius is 0."""
    tokens = np.array([[0.1, 0.2], [0.5, -0.3], [-0.4, 0.4], [0.1, 0.2]])
    book = kmeans_codebook(tokens, codes=3)
    assert book.data_radius == pytest.approx(0.0, abs=1e-12)
    assert book.size == 3


def test_kmeans_codebook_rejects_more_codes_than_distinct_tokens():
    """Asking for more codewords than tokens is an error naming the limit."""
    tokens = np.array([[0.1, 0.2], [0.5, -0.3]])
    with pytest.raises(ConfigError, match=r"at most the number of distinct .* \(2\)"):
        kmeans_codebook(tokens, codes=3)


def test_codes_below_two_are_rejected():
    """A codebook of one code is refused with the fix in the message."""
    with pytest.raises(ConfigError, match=r"`codes` must be >= 2, got 1"):
        kmeans_codebook(np.zeros((4, 2)), codes=1)


def test_encode_picks_nearest_and_pads():
    """Encoding returns the nearest codeword and the padding code where masked."""
    book = uniform_codebook(dim=1, levels=3)
    points = torch.tensor([[[-0.9], [0.2], [0.7]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    assert book.encode(points, mask).tolist() == [[0, 1, 3]]
    decoded = book.decode(torch.tensor([0, 3]))
    assert decoded.tolist() == [[-1.0], [0.0]]


def test_encode_does_not_depend_on_batch_size():
    """A point gets the same code alone or among many others."""
    book = uniform_codebook(dim=2, levels=7)
    points = torch.rand(
        1000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    together = book.encode(points)
    alone = torch.cat([book.encode(p[None]) for p in points[:50]])
    assert torch.equal(together[:50], alone)


def direct_codes(codewords, points):
    """Nearest codeword by direct differences in numpy, ties to the lowest index."""
    distances = ((points[:, None, :] - codewords[None]) ** 2).sum(-1)
    return distances.argmin(axis=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_encode_ties_and_near_ties_match_direct_distances(dtype):
    """Exact ties go to the lowest index and near ties to the direct arg-min."""
    book = uniform_codebook(dim=2, levels=5)
    codewords = torch.as_tensor(book.codewords)
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, book.size, (2000,), generator=generator)
    second = torch.randint(0, book.size, (2000,), generator=generator)
    midpoints = (codewords[first] + codewords[second]) / 2
    nudged = midpoints + 1e-12 * torch.randn(2000, 2, generator=generator)
    points = torch.cat([midpoints, nudged, codewords]).to(dtype)

    together = book.encode(points)
    expected = direct_codes(book.codewords.astype(points.numpy().dtype), points.numpy())
    assert together.tolist() == expected.tolist()
    alone = torch.cat([book.encode(p[None]) for p in points[::37]])
    assert torch.equal(alone, together[::37])


def test_encode_float32_does_not_depend_on_batch_size():
    """float32 points get the same code alone or among many, as float64 ones do."""
    book = kmeans_codebook(
        np.random.default_rng(0).normal(size=(500, 4)), codes=16, radius=3.0
    )
    points = torch.randn(
        20000, 4, dtype=torch.float32, generator=torch.Generator().manual_seed(1)
    )
    together = book.encode(points)
    alone = torch.cat([book.encode(p[None]) for p in points[::97]])
    assert together.dtype == torch.int64
    assert torch.equal(together[::97], alone)


def test_encode_of_non_finite_points_matches_direct_distances():
    """NaN and infinite points are encoded like the direct distances do."""
    book = uniform_codebook(dim=2, levels=3)
    points = torch.tensor(
        [[float("nan"), 0.0], [float("inf"), 0.0], [0.2, -0.7]], dtype=torch.float64
    )
    expected = (points[:, None] - torch.as_tensor(book.codewords)[None]).square()
    assert book.encode(points).tolist() == expected.sum(-1).argmin(1).tolist()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_encode_and_decode_follow_the_device(device):
    """Codes come back on the points' device, codewords on the codes' device."""
    book = uniform_codebook(dim=2, levels=3)
    points = torch.tensor([[0.9, -0.2], [0.1, 0.4]], device=device)
    codes = book.encode(points, torch.tensor([True, False], device=device))
    assert codes.device.type == device
    assert codes.tolist() == [7, book.size]
    decoded = book.decode(codes)
    assert decoded.device.type == device
    assert decoded.dtype == torch.float64
    assert decoded.cpu().tolist() == [[1.0, 0.0], [0.0, 0.0]]


atoms = st.lists(
    st.tuples(
        st.lists(st.integers(0, 3), min_size=3, max_size=3),
        st.sampled_from([0.0, -0.0, 1.5, -2.0]),
        st.integers(1, 5),
    ),
    min_size=1,
    max_size=12,
)


@given(atoms, st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_canonical_key_is_invariant_to_atom_order_and_zero_sign(rows, shuffler):
    """Permuting atoms or flipping the sign of zero targets keeps the key."""
    codes = np.array([r[0] for r in rows], dtype=np.uint8)
    targets = np.array([r[1] for r in rows])
    counts = np.array([r[2] for r in rows])
    first = canonical_measure(codes, targets, counts)

    order = list(range(len(rows)))
    shuffler.shuffle(order)
    flipped = np.where(targets[order] == 0.0, -targets[order], targets[order])
    second = canonical_measure(codes[order], flipped, counts[order])
    assert first.key == second.key
    assert first.counts.sum() == counts.sum()


def test_canonical_measure_merges_equal_atoms():
    """Equal codes with equal targets merge; a different target keeps its own atom."""
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2]], dtype=np.uint8)
    targets = np.array([1, 0, 1, 0])
    measure = canonical_measure(codes, targets, np.ones(4, dtype=np.int64))
    assert measure.codes.tolist() == [[0, 0], [1, 2], [1, 2]]
    assert measure.targets.tolist() == [0, 0, 1]
    assert measure.counts.tolist() == [1, 1, 2]


def test_canonical_key_differs_for_different_measures():
    """Different weights give different keys."""
    codes = np.array([[1, 2], [0, 0]], dtype=np.uint8)
    targets = np.array([1, 0])
    first = canonical_measure(codes, targets, np.array([1, 1]))
    second = canonical_measure(codes, targets, np.array([1, 2]))
    assert first.key != second.key
