"""Command-line interface: ``ocformer train`` and ``ocformer predict``.

    ocformer train --data digits --layers 2 --out runs/digits
    ocformer train --data digits --layers 3 --workers 4 --checkpoint runs/ckpt
    ocformer train --resume runs/ckpt
    ocformer policy-table --data order --codes 2 --atoms 4 --out runs/order.table
    ocformer train --policy-table runs/order.table --data order --seed 7
    ocformer predict --model runs/digits --data digits --split test --json

Errors in the input end the command with one line on standard error and exit status
2; nothing is written or replaced then. ``--json`` prints plain JSON on standard
output, whatever the terminal.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ocformer.atomic import write_text_atomic
from ocformer.config import TrainConfig, merge, read_toml
from ocformer.errors import DataError, OcformerError

if TYPE_CHECKING:
    from ocformer.config import ExecutionConfig
    from ocformer.data import Dataset
    from ocformer.estimate import Estimate
    from ocformer.policy import PolicyTable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train small Transformers as an optimal control problem, solved exactly by "
    "dynamic programming over triply quantized measures.",
)
out_console = Console()
err_console = Console(stderr=True)


def fail(error: Exception) -> None:
    """Print one line naming the problem and exit with status 2."""
    # Escaped: messages quote user input and option syntax such as "value[0,1]",
    # which rich would otherwise take for markup and drop.
    message = escape(str(error))
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


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


@app.command()
def train(
    data: Annotated[
        str | None,
        typer.Option(help="digits, sunspots, order, or a .npz path. [default: digits]"),
    ] = None,
    n_sequences: Annotated[
        int | None, typer.Option(help="Use this many sequences (order: generate).")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Layers T. [default: 2]")] = None,
    method: Annotated[
        str | None, typer.Option(help="dp, or brute (the oracle). [default: dp]")
    ] = None,
    cost: Annotated[
        str | None, typer.Option(help="mse, or error (0-1, classes). [default: mse]")
    ] = None,
    codes: Annotated[
        int | None,
        typer.Option(
            help="State codewords, or levels per axis for a uniform "
            "codebook. [default: 16]"
        ),
    ] = None,
    codebook: Annotated[
        str | None, typer.Option(help="kmeans or uniform. [default: kmeans]")
    ] = None,
    atoms: Annotated[
        int | None, typer.Option(help="Reduce the training measure to N atoms.")
    ] = None,
    measure_radius: Annotated[
        float | None,
        typer.Option(
            help="Epsilon of the W1 net over each layer's states. "
            "[default: 0, exact merging only]"
        ),
    ] = None,
    dim: Annotated[
        int | None,
        typer.Option(help="Token dimension d. [default: 16, at most d_in for pca]"),
    ] = None,
    embedding: Annotated[
        str | None, typer.Option(help="auto, pca or random. [default: auto]")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="Token set X: ball or sphere. [default: ball]")
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="Actions: grid, ternary or codebook. [default: grid]"),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="Grid values NAME=V1,V2 (repeatable); NAME is "
            "temperature, position, value_gain, angle or mlp_gain."
        ),
    ] = None,
    entries: Annotated[
        list[str] | None,
        typer.Option(help="Ternary entries, e.g. 'value[0,1]' (repeatable)."),
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Ternary magnitude s. [default: 1]")
    ] = None,
    codebook_file: Annotated[
        Path | None, typer.Option(help="Safetensors file of layer weight sets.")
    ] = None,
    step: Annotated[
        float | None, typer.Option(help="Step size h. [default: 0.5]")
    ] = None,
    ridge: Annotated[
        float | None, typer.Option(help="Ridge penalty of the head. [default: 1e-3]")
    ] = None,
    action_cost: Annotated[
        float | None, typer.Option(help="Running cost on |a|^2. [default: 0]")
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Held-out share. [default: 0.2]")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of every random choice. [default: 0]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file; flags override it.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write report.json and model/ here.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes that expand the DP's states in parallel: local worker "
            "processes, or the CPUs of a local Ray cluster. [default: 1; ray: all "
            "cores]"
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="Where states are expanded: local or ray. [default: local]"),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Where transitions are computed: cpu or cuda. [default: cpu]"
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="With --backend ray: HOST:PORT of a running Ray cluster to join. "
            "[default: start a local cluster on loopback]"
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Save the DP's progress in this directory after each layer."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run checkpointed in this directory, with its options."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print upper bounds of the DP's states and memory, and exit.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Solve even if the estimated peak memory exceeds the available.",
        ),
    ] = False,
    policy_table: Annotated[
        Path | None,
        typer.Option(
            help="Look the plan up in this table (ocformer policy-table) instead of "
            "solving; it fixes every option but --data, --n-sequences, --seed and "
            "--test-fraction."
        ),
    ] = None,
) -> None:
    """Train by exact dynamic programming and report train and test figures.

    ``--checkpoint DIR`` saves the DP after every layer; ``--resume DIR`` alone
    continues that run, with the options stored in DIR, to the same result.
    ``--policy-table FILE`` quantizes the data with the table's embedding and
    codebook and reads the plan off the table.
    """
    from ocformer.config import ExecutionConfig
    from ocformer.data import load_dataset
    from ocformer.model import MODEL_DIR, save_model
    from ocformer.train import estimate_run
    from ocformer.train import train as run_training

    flags = {
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
            "entries": entries,
            "scale": scale,
            "path": str(codebook_file) if codebook_file else None,
        },
    }
    execution_flags = {
        "workers": workers,
        "backend": backend,
        "device": device,
        "address": address,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "force": force or None,
    }
    # What defines the problem; a resumed run takes all of it from its checkpoint.
    problem_flags = {
        "--data": data,
        "--n-sequences": n_sequences,
        "--layers": layers,
        "--method": method,
        "--cost": cost,
        "--codes": codes,
        "--codebook": codebook,
        "--atoms": atoms,
        "--measure-radius": measure_radius,
        "--dim": dim,
        "--embedding": embedding,
        "--space": space,
        "--family": family,
        "--grid": grid,
        "--entries": entries,
        "--scale": scale,
        "--codebook-file": codebook_file,
        "--step": step,
        "--ridge": ridge,
        "--action-cost": action_cost,
        "--test-fraction": test_fraction,
        "--seed": seed,
        "--config": config,
    }
    table = None
    try:
        if policy_table is not None:
            execution = ExecutionConfig.from_dict(merge({}, execution_flags), "flags")
            settings, dataset, table = table_run(
                policy_table, problem_flags, execution, resume=resume, dry_run=dry_run
            )
        elif resume is not None:
            settings, dataset, stored, stored_out = resumed_run(
                resume, checkpoint, problem_flags
            )
            execution = ExecutionConfig.from_dict(
                merge(stored, {**execution_flags, "checkpoint": str(resume)}),
                str(resume),
            )
            out = out if out is not None else stored_out
        else:
            flags["actions"]["grid"] = parse_grid(grid)
            base = read_toml(config) if config is not None else {}
            source = str(config or "flags")
            stored = _section(base.pop("execution", {}), "execution")
            settings = TrainConfig.from_dict(merge(base, flags), source)
            execution = ExecutionConfig.from_dict(
                merge(stored, execution_flags), source
            )
            dataset = load_dataset(
                data or "digits", seed=settings.seed, n_sequences=n_sequences
            )
        check_out(out)
        if dry_run:
            bounds = estimate_run(dataset, settings, execution)
        else:
            with _LayerProgress(settings.n_layers) as progress:
                result = run_training(
                    dataset,
                    settings,
                    progress=progress,
                    execution=execution,
                    notes={"out": str(out) if out is not None else None},
                    policy_table=table,
                )
    except OcformerError as error:
        fail(error)

    if dry_run:
        if as_json:
            typer.echo(json.dumps(bounds.to_dict(), indent=1))
        else:
            _print_estimate(bounds)
        return

    report = result.report
    if table is not None:
        report["policy_table"]["path"] = str(policy_table)
    if out is not None:
        model_dir = out / MODEL_DIR
        report["model_path"] = str(model_dir)
        try:
            save_model(result.model, model_dir)
            write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
        except OSError as error:
            fail(
                OcformerError(
                    f"cannot write to `--out` {str(out)!r}: {error}; pass a writable "
                    "directory."
                )
            )
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print_summary(report, out)


def resumed_run(
    resume: Path, checkpoint: Path | None, problem_flags: dict[str, Any]
) -> tuple[TrainConfig, Dataset, dict[str, Any], Path | None]:
    """The configuration, dataset, execution options and ``--out`` stored in the
    checkpoint directory ``resume``.

    Raises:
        OcformerError: if a flag that defines the problem is given too, or the
            directory holds no checkpoint that the command line can restart.
    """
    from ocformer.checkpoint import STATE_FILE, read_state
    from ocformer.data import load_dataset

    if checkpoint is not None and checkpoint.resolve() != resume.resolve():
        raise OcformerError(
            f"`--resume` continues the checkpoint in {str(resume)!r}, got "
            f"--checkpoint {str(checkpoint)!r} too; drop --checkpoint."
        )
    given = [name for name, value in problem_flags.items() if value is not None]
    if given:
        raise OcformerError(
            f"`--resume` takes the run's options from {str(resume)!r}, got {given[0]} "
            "too; drop it (with --resume only --workers, --backend, --address, --out, "
            "--json and --force apply)."
        )
    state = read_state(resume)
    if state is None:
        raise DataError(
            f"`--resume` found no {STATE_FILE} in {str(resume)!r}; pass the directory "
            "that --checkpoint was given."
        )
    recipe, notes = state.get("recipe") or {}, state.get("notes") or {}
    recipe_data = recipe.get("data")
    if not recipe_data or "config" not in recipe:
        raise DataError(
            f"checkpoint {str(resume)!r} does not say how to rebuild its dataset (it "
            "was written from Python); resume it by calling ocformer.train with the "
            "same dataset, configuration and checkpoint."
        )
    settings = TrainConfig.from_dict(recipe["config"], str(resume / STATE_FILE))
    dataset = load_dataset(
        recipe_data["name"],
        seed=recipe_data["seed"],
        n_sequences=recipe_data["n_sequences"],
    )
    out = notes.get("out")
    return settings, dataset, notes.get("execution") or {}, Path(out) if out else None


def table_run(
    path: Path,
    problem_flags: dict[str, Any],
    execution: ExecutionConfig,
    *,
    resume: Path | None,
    dry_run: bool,
) -> tuple[TrainConfig, Dataset, PolicyTable]:
    """The configuration, dataset and table of a run that looks its plan up in
    the policy table ``path``.

    Raises:
        OcformerError: if a flag that the table fixes is given too, or the file is
            not a policy table with a training configuration.
    """
    from ocformer.data import load_dataset
    from ocformer.policy import load_policy_table

    if resume is not None or dry_run:
        given = "--resume" if resume is not None else "--dry-run"
        raise OcformerError(
            f"`--policy-table` looks the plan up instead of solving, got {given} "
            f"too; drop {given} or --policy-table."
        )
    free = {"--data", "--n-sequences", "--seed", "--test-fraction"}
    given = [
        name
        for name, value in problem_flags.items()
        if value is not None and name not in free
    ]
    if given:
        raise OcformerError(
            f"`--policy-table` fixes the run's options, got {given[0]} too; drop it "
            "(with a table only --data, --n-sequences, --seed and --test-fraction "
            "apply)."
        )
    table = load_policy_table(path)
    stored = table.train_config(None, execution)
    changes = {"seed": problem_flags["--seed"]}
    changes["test_fraction"] = problem_flags["--test-fraction"]
    settings = TrainConfig.from_dict(merge(stored.to_dict(), changes), str(path))
    # Without --data, the table's own dataset recipe (name and size) applies.
    data, n_sequences = problem_flags["--data"], problem_flags["--n-sequences"]
    if data is None:
        source = table.source or {}
        if "name" not in source:
            raise OcformerError(
                f"policy table {str(path)!r} does not name its dataset; pass --data."
            )
        data = source["name"]
        if n_sequences is None:
            n_sequences = source.get("n_sequences")
    dataset = load_dataset(data, seed=settings.seed, n_sequences=n_sequences)
    return settings, dataset, table


def _section(value: Any, name: str) -> dict[str, Any]:
    """A TOML section as a dictionary, or an error naming it."""
    if not isinstance(value, dict):
        raise OcformerError(
            f"`{name}` must be a table of options, got {value!r}; write its options "
            f"under an [{name}] header."
        )
    return value


def check_out(out: Path | None) -> None:
    """Reject an ``--out`` path that cannot become the output directory.

    This runs before any work is done; the directory itself is created only once
    there is something to write, so a failed run leaves no empty directory behind.
    """
    from ocformer.model import MODEL_DIR

    if out is None:
        return
    if str(out).strip() in ("", "."):
        raise OcformerError(
            f"`--out` must name an output directory, got {str(out)!r}; pass e.g. "
            "--out runs/mine."
        )
    # The nearest existing ancestor must be writable, or the run would fail at the
    # end, after all its work.
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
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
    for path in (out, out / MODEL_DIR):
        if path.exists() and not path.is_dir():
            raise OcformerError(
                f"`--out` needs {str(path)!r} to be a directory, got a file; pass "
                "a new or existing output directory."
            )
    if (out / "report.json").is_dir():
        raise OcformerError(
            f"`--out` needs {str(out / 'report.json')!r} to be a file, got a "
            "directory; pass another output directory."
        )


class _LayerProgress:
    """A rich progress bar per DP layer, on standard error."""

    def __init__(self, n_layers: int):
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
            disable=not err_console.is_terminal,
        )
        self.tasks: dict[int, Any] = {}
        self.n_layers = n_layers

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, layer: int, done: int, total: int) -> None:
        if layer not in self.tasks:
            self.tasks[layer] = self.bar.add_task(
                f"layer {layer + 1}/{max(self.n_layers, 1)}", total=total
            )
        self.bar.update(self.tasks[layer], completed=done, total=total)


def _print_estimate(bounds: Estimate) -> None:
    """The ``--dry-run`` table: bounds per layer, then the totals."""
    from ocformer.estimate import format_bytes, format_count

    table = Table(title="ocformer train --dry-run: upper bounds of the DP")
    for name in ("layer", "states", "bytes / state", "stored", "table", "transitions"):
        table.add_column(name, justify="right")
    for row in bounds.layers:
        table.add_row(
            str(row.layer),
            format_count(row.states),
            format_bytes(row.bytes_per_state),
            format_bytes(row.state_bytes),
            format_bytes(row.table_bytes),
            format_count(row.transitions),
        )
    out_console.print(table)
    verdict = "fits" if bounds.fits else "does NOT fit (pass --force to run anyway)"
    for name, value in (
        ("bytes per stored state", format_bytes(bounds.bytes_per_state)),
        ("transitions", format_count(bounds.transitions)),
        ("peak memory", format_bytes(bounds.peak_bytes)),
        ("available memory", format_bytes(bounds.available_bytes)),
        ("worker processes counted", str(bounds.workers)),
    ):
        out_console.print(escape(f"{name}: {value}"), highlight=False)
    out_console.print(escape(f"the peak {verdict}"), highlight=False)


def _print_summary(report: dict[str, Any], out: Path | None) -> None:
    title = f"ocformer train: {report['data']} ({report['method']})"
    table = Table(title=escape(title))
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("layers", report["layers"]),
        ("train / test sequences", f"{report['n_train']} / {report['n_test']}"),
        ("quantized value (optimal)", f"{report['quantized_value']:.6g}"),
        (f"train {report['cost']}", f"{report['train_loss']:.6g}"),
        (f"test {report['cost']}", f"{report['test_loss']:.6g}"),
    ]
    baseline = report["baseline_no_layers"]
    if "test_accuracy" in report:
        rows += [
            ("train accuracy", f"{report['train_accuracy']:.4f}"),
            ("test accuracy", f"{report['test_accuracy']:.4f}"),
            ("test accuracy, no layers", f"{baseline['test_accuracy']:.4f}"),
        ]
    else:
        rows.append(
            (f"test {report['cost']}, no layers", f"{baseline['test_loss']:.6g}")
        )
    counts, radii = report["counts"], report["radii"]
    rows += [
        ("states per layer", " ".join(map(str, counts["states_per_layer"]))),
        ("transitions", counts["transitions"]),
        (
            "actions / codes / atoms",
            f"{counts['actions']} / {counts['codes']} / {counts['atoms']}",
        ),
        (
            "radii state / measure / action",
            f"{radii['state']:.3g} / {radii['measure']:.3g} / {radii['action']:.3g}",
        ),
        ("plan (action per layer)", " ".join(str(p["action"]) for p in report["plan"])),
        ("wall seconds", f"{report['wall_seconds']:.1f}"),
    ]
    if "policy_table" in report:
        table_figures = report["policy_table"]
        source = table_figures.get("path") or table_figures["digest"]
        rows.insert(-1, ("plan looked up in policy table", source))
    for name, value in rows:
        table.add_row(escape(name), escape(str(value)))
    out_console.print(table)
    if out is not None:
        out_console.print(
            escape(f"report: {out / 'report.json'}  model: {report['model_path']}")
        )


@app.command("policy-table")
def policy_table_command(
    data: Annotated[
        str | None,
        typer.Option(help="A classification dataset: order, digits or an .npz path."),
    ] = None,
    n_sequences: Annotated[
        int | None, typer.Option(help="Use this many sequences (order: generate).")
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Layers T. [default: 2]")] = None,
    cost: Annotated[
        str | None, typer.Option(help="mse, or error (0-1). [default: mse]")
    ] = None,
    codes: Annotated[
        int | None,
        typer.Option(help="State codewords K (the space grows as K^n_tokens)."),
    ] = None,
    codebook: Annotated[
        str | None, typer.Option(help="kmeans or uniform. [default: kmeans]")
    ] = None,
    atoms: Annotated[
        int | None,
        typer.Option(help="N: the table covers every measure of N atoms. [required]"),
    ] = None,
    dim: Annotated[int | None, typer.Option(help="Token dimension d.")] = None,
    embedding: Annotated[
        str | None, typer.Option(help="auto, pca or random. [default: auto]")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="Token set X: ball or sphere. [default: ball]")
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="Actions: grid, ternary or codebook. [default: grid]"),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="Grid values NAME=V1,V2 (repeatable), as for train."),
    ] = None,
    entries: Annotated[
        list[str] | None,
        typer.Option(help="Ternary entries, e.g. 'value[0,1]' (repeatable)."),
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Ternary magnitude s. [default: 1]")
    ] = None,
    codebook_file: Annotated[
        Path | None, typer.Option(help="Safetensors file of layer weight sets.")
    ] = None,
    step: Annotated[
        float | None, typer.Option(help="Step size h. [default: 0.5]")
    ] = None,
    ridge: Annotated[
        float | None, typer.Option(help="Ridge penalty of the head. [default: 1e-3]")
    ] = None,
    action_cost: Annotated[
        float | None, typer.Option(help="Running cost on |a|^2. [default: 0]")
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Held-out share. [default: 0.2]")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of every random choice. [default: 0]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file; flags override it.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the table to this file. [required]")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON.")
    ] = False,
) -> None:
    """Solve every quantized measure of a tiny configuration and save the policy.

    The table holds the optimal action of every measure of N atoms at every layer,
    with the embedding, codebook and actions that quantize new data the same way;
    ``ocformer train --policy-table FILE --data ...`` then trains by lookup:

        ocformer policy-table --data order --codes 2 --atoms 4 --grid angle=0 \\
            --grid temperature=1 --out runs/order.table
    """
    import time

    from ocformer.data import load_dataset
    from ocformer.policy import build_policy_table, save_policy_table

    flags = {
        "n_layers": layers,
        "cost": cost,
        "step": step,
        "ridge": ridge,
        "action_cost": action_cost,
        "test_fraction": test_fraction,
        "seed": seed,
        "embedding": {"dim": dim, "method": embedding, "space": space, "seed": seed},
        "quantizer": {"codebook": codebook, "codes": codes, "atoms": atoms},
        "actions": {
            "family": family,
            "entries": entries,
            "scale": scale,
            "path": str(codebook_file) if codebook_file else None,
        },
    }
    started = time.perf_counter()
    try:
        check_table_out(out)
        flags["actions"]["grid"] = parse_grid(grid)
        base = read_toml(config) if config is not None else {}
        base.pop("execution", None)
        settings = TrainConfig.from_dict(merge(base, flags), str(config or "flags"))
        dataset = load_dataset(
            data or "order", seed=settings.seed, n_sequences=n_sequences
        )
        with _CountProgress("terminal costs") as progress:
            table = build_policy_table(dataset, settings, progress=progress)
    except OcformerError as error:
        fail(error)

    plan, value = table.rollout(table.problem.initial)
    figures = {
        "data": dataset.name,
        "layers": table.n_layers,
        "actions": len(table.actions),
        **table.describe(),
        "training_value": value,
        "training_plan": list(plan),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "path": str(out),
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_policy_table(table, out)
    except OSError as error:
        fail(
            OcformerError(
                f"cannot write `--out` {str(out)!r}: {error}; pass a writable file "
                "path."
            )
        )
    if as_json:
        typer.echo(json.dumps(figures, indent=1))
        return
    summary = Table(title=escape(f"ocformer policy-table: {dataset.name}"))
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for name, figure in figures.items():
        if isinstance(figure, list):
            figure = " ".join(map(str, figure))
        elif isinstance(figure, float):
            figure = f"{figure:.6g}"
        summary.add_row(escape(name.replace("_", " ")), escape(str(figure)))
    out_console.print(summary)


class _CountProgress:
    """One rich progress bar of ``progress(done, total)`` calls, on standard error."""

    def __init__(self, description: str):
        self.bar = Progress(
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        self.task = self.bar.add_task(description, total=None)

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


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
    existing = out.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OcformerError(
            f"`--out` {str(out)!r} cannot be written ({str(existing)!r} is not a "
            "writable directory); pass a writable file path."
        )


@app.command()
def predict(
    model: Annotated[
        Path, typer.Option(help="Directory written by train --out (or its model/).")
    ],
    data: Annotated[str, typer.Option(help="digits, sunspots, order, or a .npz path.")],
    split: Annotated[str, typer.Option(help="test, train or all.")] = "test",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON.")
    ] = False,
) -> None:
    """Evaluate a saved model on a dataset split reproduced from training."""
    from ocformer.data import load_dataset, same_source, split_dataset
    from ocformer.model import align_dataset, load_model
    from ocformer.train import evaluate

    try:
        if split not in ("test", "train", "all"):
            raise OcformerError(
                f"`--split` must be test, train or all, got {split!r}; use test for "
                "the held-out sequences."
            )
        loaded = load_model(model)
        spec = loaded.config["data"]
        source = spec["source"] or {}
        # The same dataset is rebuilt as in training (subset and split); another one
        # is used whole before the split.
        if same_source(data, source):
            dataset = load_dataset(
                data, seed=source["seed"], n_sequences=source["n_sequences"]
            )
        else:
            dataset = load_dataset(data)
        dataset = align_dataset(loaded, dataset)
        if split != "all":
            parts = split_dataset(
                dataset, test_fraction=spec["test_fraction"], seed=spec["split_seed"]
            )
            dataset = parts.test if split == "test" else parts.train
        figures = evaluate(loaded, dataset, loaded.config["cost"])
    except OcformerError as error:
        fail(error)

    result = {"data": data, "split": split, "n": dataset.n_sequences, **figures}
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    table = Table(title=escape(f"ocformer predict: {data} ({split})"))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in result.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(name, escape(text))
    out_console.print(table)


@app.command()
def compare(
    data: Annotated[
        str | None,
        typer.Option(help="digits, sunspots, order, or a .npz path. [default: digits]"),
    ] = None,
    n_sequences: Annotated[
        int | None, typer.Option(help="Use this many sequences (order: generate).")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Seeds 0 .. K-1, one split each. [default: 3]")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated, from dp, adam, adam-round, adam-ste, cma, random. "
            "[default: all]"
        ),
    ] = None,
    layers: Annotated[int | None, typer.Option(help="Layers T. [default: 2]")] = None,
    cost: Annotated[
        str | None, typer.Option(help="mse, or error (0-1, classes). [default: mse]")
    ] = None,
    codes: Annotated[
        int | None, typer.Option(help="State codewords. [default: 16]")
    ] = None,
    codebook: Annotated[
        str | None, typer.Option(help="kmeans or uniform. [default: kmeans]")
    ] = None,
    atoms: Annotated[
        int | None, typer.Option(help="Reduce the training measure to N atoms.")
    ] = None,
    dim: Annotated[
        int | None,
        typer.Option(help="Token dimension d. [default: 16, at most d_in for pca]"),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="Grid values NAME=V1,V2 (repeatable), as for train."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Adam steps, full batch. [default: 200]")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Adam's step size. [default: 0.05]")
    ] = None,
    cma_evaluations: Annotated[
        int | None, typer.Option(help="CMA-ES candidates at most. [default: 600]")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML config file of the model, as for train."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write compare.json, compare.md and PNG plots here."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON.")
    ] = False,
) -> None:
    """Train the same model with DP, Adam, Adam rounded, Adam with a straight-through
    estimator, CMA-ES and random plans, and compare them seed by seed."""
    from ocformer.compare import CompareConfig, write_comparison
    from ocformer.compare import compare as run_comparison
    from ocformer.data import load_dataset

    flags = {
        "n_layers": layers,
        "cost": cost,
        "embedding": {"dim": dim},
        "quantizer": {"codebook": codebook, "codes": codes, "atoms": atoms},
        "actions": {"grid": None},
    }
    options = {
        "seeds": seeds,
        "steps": steps,
        "learning_rate": learning_rate,
        "cma_evaluations": cma_evaluations,
    }
    try:
        flags["actions"]["grid"] = parse_grid(grid)
        base = read_toml(config) if config is not None else {}
        base.pop("execution", None)
        settings = TrainConfig.from_dict(merge(base, flags), str(config or "flags"))
        chosen = {name: value for name, value in options.items() if value is not None}
        if methods is not None:
            chosen["methods"] = tuple(m.strip() for m in methods.split(",") if m)
        comparison_options = CompareConfig(**chosen)
        check_out(out)
        dataset = load_dataset(data or "digits", n_sequences=n_sequences)
        with _MethodProgress(comparison_options) as progress:
            comparison = run_comparison(
                dataset, settings, comparison_options, progress=progress
            )
    except OcformerError as error:
        fail(error)

    if out is not None:
        try:
            write_comparison(comparison, out)
        except OSError as error:
            fail(
                OcformerError(
                    f"cannot write to `--out` {str(out)!r}: {error}; pass a writable "
                    "directory."
                )
            )
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=1))
    else:
        _print_comparison(comparison, out)


class _MethodProgress:
    """A rich progress bar over (seed, method) runs, on standard error."""

    def __init__(self, options):
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        shown = [m for m in options.methods if m != "adam-round"]
        self.total = options.seeds * len(shown)
        self.task = self.bar.add_task("compare", total=self.total)
        self.started = False

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def __call__(self, seed: int, method: str) -> None:
        if self.started:
            self.bar.advance(self.task)
        self.started = True
        self.bar.update(self.task, description=f"seed {seed}: {method}")


def _print_comparison(comparison, out: Path | None) -> None:
    from ocformer.compare import row_fields

    fields = row_fields(comparison.task, comparison.cost)[4:]
    names = {"wall_seconds": "seconds"}
    table = Table(
        title=escape(
            f"ocformer compare: {comparison.data} ({comparison.cost}, mean over "
            f"{comparison.options['seeds']} seeds)"
        )
    )
    table.add_column("method")
    table.add_column("objective")
    for name in fields:
        table.add_column(names.get(name, name).replace("_", " "), justify="right")
    objectives = {row["method"]: row["objective"] for row in comparison.rows}
    for entry in comparison.summary():
        cells = [entry["method"], objectives[entry["method"]]]
        for name in fields:
            figure = entry.get(name)
            cells.append("-" if figure is None else f"{figure['mean']:.4g}")
        table.add_row(*(escape(cell) for cell in cells))
    out_console.print(table)
    check = comparison.dp_optimal()
    if check["holds"] is not None:
        verdict = "holds" if check["holds"] else "VIOLATED"
        out_console.print(
            escape(
                f"dp's quantized value <= every finite-set plan's, seed by seed: "
                f"{verdict} ({check['checked']} checked)"
            ),
            soft_wrap=True,
        )
    if out is not None:
        out_console.print(
            escape(
                f"ranges over seeds and every row: {out / 'compare.md'}; "
                f"plots: {out}/compare-*.png"
            ),
            soft_wrap=True,
        )


@app.command()
def verify(
    out: Annotated[
        Path,
        typer.Option(help="Write verify.json, verify.md and one PNG per claim here."),
    ],
    data: Annotated[
        str, typer.Option(help="order or digits: the data of the claims that use one.")
    ] = "order",
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Small sizes (about a minute on two cores)."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print verify.json on standard output.")
    ] = False,
) -> None:
    """Check the five claims of DESIGN.md section 5 numerically, e.g. ocformer
    verify --quick --out runs/verify.

    Exit status: 0 when every claim passed, 1 when the run completed but a claim
    failed (its figures are still written), 2 on bad input.
    """
    from ocformer.verify import Settings, write_outputs
    from ocformer.verify import verify as run_verification
    from ocformer.verify.report import to_json

    try:
        settings = Settings(data=data, quick=quick, seed=seed)
        check_verify_out(out)
        with _ClaimProgress() as progress:
            result = run_verification(settings, started=progress)
    except OcformerError as error:
        fail(error)

    try:
        write_outputs(result, out)
    except OSError as error:
        fail(
            OcformerError(
                f"cannot write to `--out` {str(out)!r}: {error}; pass a writable "
                "directory."
            )
        )
    if as_json:
        typer.echo(to_json(result), nl=False)
    else:
        _print_verification(result, out)
    if not result.passed:
        raise typer.Exit(code=1)


def check_verify_out(out: Path) -> None:
    """Reject an ``--out`` that cannot hold the verification's files, before any
    work is done."""
    from ocformer.verify.report import JSON_FILE, MARKDOWN_FILE

    if str(out).strip() in ("", "."):
        raise OcformerError(
            f"`--out` must name an output directory, got {str(out)!r}; pass e.g. "
            "--out runs/verify."
        )
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OcformerError(
            f"`--out` {str(out)!r} lies at or under the file {str(existing)!r}; pass "
            "a directory path."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OcformerError(
            f"`--out` {str(out)!r} cannot be written ({str(existing)!r} is not "
            "writable); pass a writable directory."
        )
    for name in (JSON_FILE, MARKDOWN_FILE):
        if (out / name).is_dir():
            raise OcformerError(
                f"`--out` needs {str(out / name)!r} to be a file, got a directory; "
                "pass another output directory."
            )


class _ClaimProgress:
    """A rich progress bar over the five claims, on standard error."""

    def __init__(self):
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        self.task = self.bar.add_task("verify", total=5)
        self.started = False

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        if not any(exc):
            self.bar.update(self.task, completed=5)
        self.bar.stop()

    def __call__(self, number: int, title: str) -> None:
        if self.started:
            self.bar.advance(self.task)
        self.started = True
        self.bar.update(self.task, description=f"claim {number}: {title}")


def _print_verification(result, out: Path) -> None:
    settings = result.settings
    table = Table(
        title=escape(
            f"ocformer verify: {settings.data} ({settings.mode}, seed {settings.seed})"
        )
    )
    table.add_column("claim")
    table.add_column("verdict")
    table.add_column("headline figures")
    table.add_column("seconds", justify="right")
    for claim in result.claims:
        verdict = "[green]passed[/]" if claim.passed else "[bold red]FAILED[/]"
        table.add_row(
            escape(f"{claim.number}. {claim.title}"),
            verdict,
            escape(claim.summary),
            f"{claim.seconds:.1f}",
        )
    out_console.print(table)
    out_console.print(
        escape(
            f"{result.n_passed} of {len(result.claims)} claims passed in "
            f"{result.seconds:.0f} s; report: {out / 'verify.md'}"
        ),
        soft_wrap=True,
    )


def main() -> None:
    """Entry point of the ``ocformer`` command."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.WARNING)
    app()
