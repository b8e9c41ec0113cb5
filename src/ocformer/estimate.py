"""What a DP solve will need, bounded before solving: states, transitions, memory.

The states of layer t are bounded by

    S_t <= min(L^t, K^P)

with L actions, K codewords and P the real tokens of Lambda_0: each state is one of
the K^P arrays of codes its atoms can take. (The bound ignores deduplication and the
epsilon-net, which is what makes it a bound; on data where few histories merge, such as
digits, the DP reaches nearly L^t.)

Bytes are counted as the solver lays them out:

- a stored state: its codes, ``atoms * n_tokens`` of uint8 or uint16, plus
  ``STATE_OVERHEAD = 64`` bytes: its 16-byte canonical key, its 8-byte slot and a
  40-byte share of the hash table that finds it while its layer is built. CPython's
  object headers for the key and the slot add ``INDEX_HEADERS = 72`` bytes per state
  while the layer is built (135 bytes per index entry in all, measured); they are
  counted in the peak, not in the stored state. A final state keeps no codes: its
  8-byte value and the same 64 bytes.
- a layer's children table: 8 bytes per transition (state, action).
- one chunk in flight: its children's codes and keys; one chunk being expanded:
  ``chunk * actions * atoms * n_tokens`` tokens of float64, each with three
  ``dim``-vectors (decoded, moved, one temporary) and its distances to every codeword.
- a worker process (``workers > 1``): ``WORKER_FOOTPRINT`` for Python and torch, the
  problem, and one chunk being expanded.
- with an epsilon-net, each kept state of the layer being built is copied into the net
  with its mean token (``NET_OVERHEAD`` bytes of array headers and list entries more).

The peak is the largest of: any layer of the forward pass (every table so far, the
frontier, the next layer being built twice over while it is joined into one array, the
chunks in flight and the workers), and the backward pass (every table and two arrays
of Q-values of the widest layer).
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import asdict, dataclass
from typing import Any

from ocformer.mdp import QuantizedProblem
from ocformer.parallel import IN_FLIGHT_PER_WORKER

STATE_OVERHEAD = 64
INDEX_HEADERS = 72
NET_OVERHEAD = 240
WORKER_FOOTPRINT = 300 * 2**20


@dataclass(frozen=True)
class LayerEstimate:
    """The bounds of one layer t.

    Attributes:
        layer: t, from 0 (Lambda_0) to T (the final states).
        states: upper bound of its distinct states.
        bytes_per_state: bytes each of its states is stored in.
        state_bytes: ``states * bytes_per_state``.
        table_bytes: its children table, 8 bytes per transition (0 at T).
        transitions: its (state, action) pairs, ``states * actions`` (0 at T).
    """

    layer: int
    states: int
    bytes_per_state: int
    state_bytes: int
    table_bytes: int
    transitions: int


@dataclass(frozen=True)
class Estimate:
    """Upper bounds for one DP solve, and the memory there is.

    Attributes:
        layers: one entry per layer, 0..T.
        bytes_per_state: bytes of a stored (non-final) state: codes + 64.
        transitions: every (state, action) pair of the forward pass.
        peak_bytes: the most memory the solve can hold at once.
        available_bytes: memory available now (``MemAvailable``), or None when it
            cannot be read.
        workers: worker processes counted.
    """

    layers: tuple[LayerEstimate, ...]
    bytes_per_state: int
    transitions: int
    peak_bytes: int
    available_bytes: int | None
    workers: int

    @property
    def fits(self) -> bool:
        """Whether the peak fits in the available memory (True when unknown)."""
        return self.available_bytes is None or self.peak_bytes <= self.available_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary, for JSON."""
        return {
            **asdict(self),
            "layers": [asdict(row) for row in self.layers],
            "fits": self.fits,
        }


def state_bounds(problem: QuantizedProblem) -> list[int]:
    """``min(L^t, K^P)`` for t = 0..T (Python integers: they can be very large)."""
    n_actions, n_codes = problem.n_actions, problem.codebook.size
    real_tokens = int(problem.mask.sum())
    log_arrays = real_tokens * math.log(max(n_codes, 1))
    bounds = []
    for layer in range(problem.n_layers + 1):
        # Compare logarithms first, so that K^P is only computed when it is small.
        if layer * math.log(max(n_actions, 1)) <= log_arrays:
            bounds.append(n_actions**layer)
        else:
            bounds.append(n_codes**real_tokens)
    return bounds


def estimate(
    problem: QuantizedProblem,
    *,
    measure_radius: float = 0.0,
    workers: int = 1,
    available_bytes: int | None = None,
) -> Estimate:
    """Bound the states, transitions and memory of ``solve_dp(problem)``.

    Args:
        problem: the MDP.
        measure_radius: epsilon of the measure net; > 0 counts the net's copies.
        workers: worker processes that expand chunks (1: this process).
        available_bytes: the memory to compare with; None reads it from the system.

    Returns:
        The bounds, layer by layer, and the peak.
    """
    n_actions = problem.n_actions
    atoms, n_tokens = problem.initial.codes.shape
    dim = problem.codebook.codewords.shape[1]
    codes_bytes = atoms * n_tokens * problem.codebook.code_dtype.itemsize
    bounds = state_bounds(problem)
    horizon = problem.n_layers

    layers = []
    for layer, states in enumerate(bounds):
        final = layer == horizon
        per_state = (8 if final else codes_bytes) + STATE_OVERHEAD
        edges = 0 if final else states * n_actions
        layers.append(
            LayerEstimate(
                layer, states, per_state, states * per_state, 8 * edges, edges
            )
        )

    # One chunk: its children's codes and 49-byte key objects while it is in flight,
    # and float64 tokens while it is expanded.
    chunk = min(problem.chunk_size(n_actions), max(bounds[:-1], default=1))
    children = chunk * n_actions
    expanding = children * atoms * n_tokens * 8 * (3 * dim + problem.codebook.size)
    in_flight = children * (codes_bytes + 49)
    if workers > 1:
        problem_bytes = len(pickle.dumps(problem))
        helpers = workers * (WORKER_FOOTPRINT + problem_bytes + expanding)
        in_flight *= IN_FLIGHT_PER_WORKER * workers
    else:
        helpers = expanding

    # Forward pass: layer t is expanded while layer t + 1 is built.
    peak = 0
    tables = 0
    for layer in range(horizon):
        current, following = layers[layer], layers[layer + 1]
        tables += current.table_bytes
        building = following.state_bytes + following.states * INDEX_HEADERS
        if layer + 1 < horizon:
            building += following.states * codes_bytes  # joined into one array
            if measure_radius > 0:
                net = codes_bytes + 8 * dim + NET_OVERHEAD
                building += following.states * net
        frontier = current.states * codes_bytes
        peak = max(peak, tables + frontier + building + in_flight + helpers)

    # Backward pass: every table, and Q-values of the widest layer twice.
    widest = max((row.table_bytes for row in layers), default=0)
    peak = max(peak, tables + 2 * widest)

    if available_bytes is None:
        available_bytes = available_memory()
    return Estimate(
        layers=tuple(layers),
        bytes_per_state=codes_bytes + STATE_OVERHEAD,
        transitions=sum(row.transitions for row in layers),
        peak_bytes=peak,
        available_bytes=available_bytes,
        workers=workers,
    )


def available_memory(meminfo_path: str = "/proc/meminfo") -> int | None:
    """Bytes of memory available now: ``MemAvailable`` of /proc/meminfo, else the
    free physical pages (``os.sysconf``), else None."""
    try:
        with open(meminfo_path, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def format_bytes(size: int | None) -> str:
    """``1536`` -> ``'1.5 KiB'``; beyond TiB, bytes in powers of ten.

    >>> format_bytes(1536), format_bytes(32**40)
    ('1.5 KiB', '1.61e+60 B')
    """
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} B"
    exponent = min((int(size).bit_length() - 1) // 10, 4)
    if exponent == 4 and size >= 1024**5:
        # Bounds can exceed any float; the logarithm of a Python integer cannot.
        return f"{format_count(size)} B"
    unit = ("B", "KiB", "MiB", "GiB", "TiB")[exponent]
    return f"{size / 1024**exponent:.1f} {unit}"


def format_count(count: int) -> str:
    """``1024`` -> ``'1,024'``; beyond a trillion, a power of ten.

    >>> format_count(1024), format_count(32**40)
    ('1,024', '1.61e+60')
    """
    if count < 10**12:
        return f"{count:,}"
    power = math.floor(math.log10(count))
    return f"{10 ** (math.log10(count) - power):.2f}e+{power}"
