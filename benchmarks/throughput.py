"""How close the transition kernel runs to the machine's matrix-multiply rate.

One run measures, seeded and after a warm-up:

- the machine: torch's float32 (and float64) rate on a square GEMM of 2048 x 2048;
- the layer: `dynamics.layer_step` of every action on a digits-sized state (1,438
  sequences of 8 tokens, d = 4, 64 actions of the grid family), in GFLOP/s counted
  analytically (`layer_flops`), and its ratio to the GEMM rate;
- the transition: `layer_step` followed by `StateCodebook.encode`, in transitions per
  second. One transition is one (state, action) pair, the state being the whole
  measure of all sequences.

Tokens are the digits rows embedded with `ocformer.embedding` when the sizes allow it
(8 tokens, at most 1,797 sequences), seeded random points of the ball otherwise.

    python benchmarks/throughput.py                # a table
    python benchmarks/throughput.py --json         # one JSON object
    python benchmarks/throughput.py --dim 16 --actions 32 --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from harness import emit

from ocformer.actions import grid_actions
from ocformer.data import digits
from ocformer.dynamics import LayerWeights, layer_step
from ocformer.embedding import Embedding, EmbeddingConfig, positional_encoding, project
from ocformer.quantize import StateCodebook, kmeans_codebook

POSITION_DIM = 2
GEMM_SIZE = 2048
CODES = 16
SEED = 0


def layer_flops(
    *, sequences: int, tokens: int, dim: int, key_dim: int, features: int, hidden: int
) -> int:
    """FLOPs of one layer on all sequences for one action; a multiply-add counts 2.

    Per sequence of n tokens, with F = dim + position_dim the query/key input size:

        queries and keys   2 * (2 n key_dim F)
        scores             2 n^2 key_dim
        weights x values   2 n^2 dim
        value projection   2 n dim^2
        MLP in and out     2 * (2 n dim hidden)

    Softmax, residuals, bias, ReLU and projection onto X are not counted.
    """
    n = tokens
    per_sequence = (
        2 * (2 * n * key_dim * features)
        + 2 * n * n * key_dim
        + 2 * n * n * dim
        + 2 * n * dim * dim
        + 2 * (2 * n * dim * hidden)
    )
    return sequences * per_sequence


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(
    function: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float]:
    """Best and median wall seconds of `repeats` calls, after one warm-up call."""
    function()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return min(seconds), statistics.median(seconds)


def gemm_rate(dtype: torch.dtype, repeats: int, device: torch.device) -> float:
    """Best GFLOP/s of a square GEMM of GEMM_SIZE."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    shape = (GEMM_SIZE, GEMM_SIZE)
    left = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    right = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    out = torch.empty_like(left)
    best, _ = best_seconds(
        lambda: torch.mm(left, right, out=out), max(repeats, 3), device
    )
    return 2 * GEMM_SIZE**3 / best / 1e9


def workload_tokens(
    sequences: int, tokens: int, dim: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Tokens (sequences, tokens, dim) in the unit ball, a mask, and their source."""
    data = digits()
    if tokens == data.n_tokens and sequences <= data.n_sequences:
        config = EmbeddingConfig(dim=dim, seed=SEED)
        embedding = Embedding.fit(data.tokens, data.mask, config)
        embedded = embedding(data.tokens, data.mask)[:sequences]
        return embedded, data.mask[:sequences], "digits"
    generator = torch.Generator().manual_seed(SEED)
    points = torch.randn(sequences, tokens, dim, generator=generator).double()
    radii = torch.rand(sequences, tokens, 1, generator=generator).double()
    points = project(points, space="ball", radius=1.0) * radii ** (1 / dim)
    return points.numpy(), np.ones((sequences, tokens), dtype=bool), "random"


def action_weights(n_actions: int, dim: int) -> LayerWeights:
    """The first `n_actions` of a grid with enough temperatures (16 actions each)."""
    temperatures = tuple(np.linspace(0.0, 2.0, max(1, math.ceil(n_actions / 16))))
    grid = {"temperature": temperatures}
    actions = grid_actions(dim=dim, position_dim=POSITION_DIM, grid=grid)
    return actions.weights.select(slice(0, n_actions))


def measure(
    dtype: torch.dtype,
    *,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    weights: LayerWeights,
    codebook: StateCodebook,
    repeats: int,
    device: torch.device,
) -> dict[str, float]:
    """Layer and transition figures of one dtype."""
    tokens = tokens.to(device=device, dtype=dtype)[None]  # (1, sequences, n, dim)
    mask = mask.to(device)
    weights = LayerWeights(
        **{
            name: tensor.to(device, dtype)
            for name, tensor in weights.to_tensors().items()
        }
    )
    encodings = torch.as_tensor(positional_encoding(tokens.shape[2], POSITION_DIM))
    encodings = encodings.to(device=device, dtype=dtype)
    options = {"step": 0.5, "space": "ball", "radius": 1.0}

    def layer() -> torch.Tensor:
        return layer_step(tokens, mask, encodings, weights, **options)

    def transition() -> torch.Tensor:
        moved = layer()
        return codebook.encode(moved, mask.expand(moved.shape[:-1]))

    layer_best, layer_median = best_seconds(layer, repeats, device)
    transition_best, _ = best_seconds(transition, repeats, device)
    flops = len(weights) * layer_flops(
        sequences=tokens.shape[1],
        tokens=tokens.shape[2],
        dim=weights.dim,
        key_dim=weights.key_dim,
        features=weights.dim + weights.position_dim,
        hidden=weights.hidden,
    )
    gemm = gemm_rate(dtype, repeats, device)
    achieved = flops / layer_best / 1e9
    return {
        "gemm_gflops": gemm,
        "transition_gflops": achieved,
        "transition_gflops_median": flops / layer_median / 1e9,
        "ratio": achieved / gemm,
        "transitions_per_second": len(weights) / transition_best,
        "layer_seconds": layer_best,
        "encode_seconds": transition_best - layer_best,
        "gflop_per_layer_call": flops / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1438)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--dim", type=int, default=4)
    parser.add_argument("--actions", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    device = torch.device(args.device)
    raw_tokens, raw_mask, source = workload_tokens(
        args.sequences, args.tokens, args.dim
    )
    codebook = kmeans_codebook(raw_tokens[raw_mask], codes=CODES, seed=SEED)
    weights = action_weights(args.actions, args.dim)
    tokens, mask = torch.as_tensor(raw_tokens), torch.as_tensor(raw_mask)

    figures = {
        str(dtype).removeprefix("torch."): measure(
            dtype,
            tokens=tokens,
            mask=mask,
            weights=weights,
            codebook=codebook,
            repeats=args.repeats,
            device=device,
        )
        for dtype in (torch.float32, torch.float64)
    }
    rows = [{"dtype": name, **values} for name, values in figures.items()]
    summary = {
        **figures["float32"],
        **{f"{key}_float64": value for key, value in figures["float64"].items()},
        "sequences": args.sequences,
        "tokens": args.tokens,
        "dim": args.dim,
        "actions": len(weights),
        "tokens_source": source,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    emit("transition kernel against the GEMM rate", rows, summary, as_json=args.json)


if __name__ == "__main__":
    main()
