"""Options that several commands share: their declarations, the model flags they
turn into a ``TrainConfig`` dictionary, and the checks of ``--grid`` and ``--out``.

An option that one command alone takes, or that one command words differently, is
declared in that command's signature; the aliases here carry the declarations that
stand identically in two or more commands, so that their help texts cannot drift
(and train's ``--grid``, beside the shorter help the other commands give it):

    def train(layers: Layers = None, seed: Seed = None) -> None: ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ocformer.config import read_toml
from ocformer.errors import OcformerError

# train and compare.
Data = Annotated[
    str | None,
    typer.Option(help="digits, sunspots, order, or a .npz path. [default: digits]"),
]
Cost = Annotated[
    str | None, typer.Option(help="mse, or error (0-1, classes). [default: mse]")
]
Atoms = Annotated[
    int | None, typer.Option(help="Reduce the training measure to N atoms.")
]
Dim = Annotated[
    int | None,
    typer.Option(help="Token dimension d. [default: 16, at most d_in for pca]"),
]

# train, policy-table and compare.
NSequences = Annotated[
    int | None, typer.Option(help="Use this many sequences (order: generate).")
]
Layers = Annotated[int | None, typer.Option(help="Layers T. [default: 2]")]
Codebook = Annotated[
    str | None, typer.Option(help="kmeans or uniform. [default: kmeans]")
]

# train and policy-table.
Embedding = Annotated[
    str | None, typer.Option(help="auto, pca or random. [default: auto]")
]
Space = Annotated[
    str | None, typer.Option(help="Token set X: ball or sphere. [default: ball]")
]
Family = Annotated[
    str | None,
    typer.Option(help="Actions: grid, ternary or codebook. [default: grid]"),
]
Entries = Annotated[
    list[str] | None,
    typer.Option(help="Ternary entries, e.g. 'value[0,1]' (repeatable)."),
]
Scale = Annotated[float | None, typer.Option(help="Ternary magnitude s. [default: 1]")]
CodebookFile = Annotated[
    Path | None, typer.Option(help="Safetensors file of layer weight sets.")
]
Step = Annotated[float | None, typer.Option(help="Step size h. [default: 0.5]")]
Ridge = Annotated[
    float | None, typer.Option(help="Ridge penalty of the head. [default: 1e-3]")
]
ActionCost = Annotated[
    float | None, typer.Option(help="Running cost on |a|^2. [default: 0]")
]
TestFraction = Annotated[
    float | None, typer.Option(help="Held-out share. [default: 0.2]")
]
Seed = Annotated[
    int | None, typer.Option(help="Seed of every random choice. [default: 0]")
]
Config = Annotated[
    Path | None, typer.Option(help="TOML config file; flags override it.")
]

# train spells out the grid; policy-table and compare refer to it.
Grid = Annotated[
    list[str] | None,
    typer.Option(
        help="Grid values NAME=V1,V2 (repeatable); NAME is "
        "temperature, position, value_gain, angle or mlp_gain."
    ),
]
GridAsForTrain = Annotated[
    list[str] | None,
    typer.Option(help="Grid values NAME=V1,V2 (repeatable), as for train."),
]

# policy-table and predict.
JsonFigures = Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")]


def model_flags(
    *,
    layers: int | None = None,
    method: str | None = None,
    cost: str | None = None,
    codes: int | None = None,
    codebook: str | None = None,
    atoms: int | None = None,
    measure_radius: float | None = None,
    dim: int | None = None,
    embedding: str | None = None,
    space: str | None = None,
    family: str | None = None,
    grid: list[str] | None = None,
    entries: list[str] | None = None,
    scale: float | None = None,
    codebook_file: Path | None = None,
    step: float | None = None,
    ridge: float | None = None,
    action_cost: float | None = None,
    test_fraction: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The ``TrainConfig`` dictionary of the model flags a command was given.

    A flag left at None, or one the command does not take, keeps the config file's
    value (``ocformer.config.merge`` skips None); ``seed`` seeds the embedding too.

    Raises:
        OcformerError: if a ``--grid`` item is not NAME=V1,V2,...
    """
    return {
        "n_layers": layers,
        "method": method,
        "cost": cost,
        "step": step,
        "ridge": ridge,
        "action_cost": action_cost,
        "test_fraction": test_fraction,
        "seed": seed,
        "embedding": {"dim": dim, "method": embedding, "space": space, "seed": seed},
        "quantizer": {
            "codebook": codebook,
            "codes": codes,
            "atoms": atoms,
            "measure_radius": measure_radius,
        },
        "actions": {
            "family": family,
            "grid": parse_grid(grid),
            "entries": entries,
            "scale": scale,
            "path": str(codebook_file) if codebook_file else None,
        },
    }


def read_config(config: Path | None) -> tuple[dict[str, Any], Any]:
    """The model options of the ``--config`` file, and its ``execution`` entry as
    written (``{}`` when absent); both are empty without a file.

    Raises:
        OcformerError: if the file cannot be read or is not TOML.
    """
    base = read_toml(config) if config is not None else {}
    return base, base.pop("execution", {})


def section(value: Any, name: str) -> dict[str, Any]:
    """A TOML section as a dictionary, or an error naming it."""
    if not isinstance(value, dict):
        raise OcformerError(
            f"`{name}` must be a table of options, got {value!r}; write its options "
            f"under an [{name}] header."
        )
    return value


def parse_grid(items: list[str] | None) -> dict[str, tuple[float, ...]] | None:
    """``["temperature=1,4", "angle=0"]`` -> ``{"temperature": (1.0, 4.0), ...}``."""
    if not items:
        return None
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            grid[name.strip()] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise OcformerError(
                f"`--grid` takes NAME=V1,V2,..., got {item!r}; for example "
                "--grid temperature=1,4."
            ) from None
        if not values:
            raise OcformerError(f"`--grid {item}` lists no values; use NAME=V1,V2.")
    return grid


def check_out(out: Path | None) -> None:
    """Reject an ``--out`` path that cannot become the output directory of train
    or compare: report.json and the model directory go there.

    This runs before any work is done; the directory itself is created only once
    there is something to write, so a failed run leaves no empty directory behind.
    """
    from ocformer.model import MODEL_DIR

    if out is not None:
        check_out_directory(
            out, example="runs/mine", directories=(MODEL_DIR,), files=("report.json",)
        )


def check_out_directory(
    out: Path,
    *,
    example: str,
    directories: tuple[str, ...] = (),
    files: tuple[str, ...] = (),
) -> None:
    """Reject an ``--out`` that cannot become an output directory holding the
    subdirectories ``directories`` and the files ``files``.

    Args:
        out: the ``--out`` path.
        example: a directory the first error suggests, e.g. ``"runs/mine"``.
        directories: names under ``out`` that must not be files.
        files: names under ``out`` that must not be directories.

    Raises:
        OcformerError: naming the path that is in the way.
    """
    if str(out).strip() in ("", "."):
        raise OcformerError(
            f"`--out` must name an output directory, got {str(out)!r}; pass e.g. "
            f"--out {example}."
        )
    # The nearest existing ancestor must be writable, or the run would fail at the
    # end, after all its work.
    existing = nearest_existing(out.absolute())
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise OcformerError(
            f"`--out` {str(out)!r} cannot be written ({str(existing)!r} is not "
            "writable); pass a writable directory."
        )
    if not existing.is_dir() and existing != out.absolute():
        raise OcformerError(
            f"`--out` {str(out)!r} lies under the file {str(existing)!r}; pass a "
            "directory path."
        )
    for path in (out, *(out / name for name in directories)):
        if path.exists() and not path.is_dir():
            raise OcformerError(
                f"`--out` needs {str(path)!r} to be a directory, got a file; pass "
                "a new or existing output directory."
            )
    for name in files:
        if (out / name).is_dir():
            raise OcformerError(
                f"`--out` needs {str(out / name)!r} to be a file, got a directory; "
                "pass another output directory."
            )


def check_table_out(out: Path | None) -> None:
    """Reject an ``--out`` that cannot become the table file, before any work."""
    if out is None or str(out).strip() in ("", "."):
        raise OcformerError(
            "`--out` must name the table file, got none; pass e.g. "
            "--out runs/order.table."
        )
    if out.is_dir():
        raise OcformerError(
            f"`--out` {str(out)!r} is a directory; pass a file path such as "
            f"{str(out / 'policy.table')!r}."
        )
    existing = nearest_existing(out.absolute().parent)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OcformerError(
            f"`--out` {str(out)!r} cannot be written ({str(existing)!r} is not a "
            "writable directory); pass a writable file path."
        )


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    while not path.exists():
        path = path.parent
    return path


def write_error(out: Path, error: OSError) -> OcformerError:
    """The error to report when writing into the ``--out`` directory failed."""
    return OcformerError(
        f"cannot write to `--out` {str(out)!r}: {error}; pass a writable directory."
    )
