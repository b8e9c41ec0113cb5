"""``ocformer train``: solve the DP, or resume it, bound it, or look the plan up.

    ocformer train --data digits --layers 2 --out runs/digits
    ocformer train --data digits --layers 3 --workers 4 --checkpoint runs/ckpt
    ocformer train --resume runs/ckpt
    ocformer train --data order --dry-run
    ocformer train --policy-table runs/order.table --data order --seed 7

The options of a resumed or looked-up run come from ``runs``; the flags and
``--out`` are checked before the DP starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ocformer.atomic import write_text_atomic
from ocformer.cli import app, fail, out_console
from ocformer.cli.options import (
    ActionCost,
    Atoms,
    Codebook,
    CodebookFile,
    Config,
    Cost,
    Data,
    Dim,
    Embedding,
    Entries,
    Family,
    Grid,
    Layers,
    NSequences,
    Ridge,
    Scale,
    Seed,
    Space,
    Step,
    TestFraction,
    check_out,
    model_flags,
    read_config,
    section,
    write_error,
)
from ocformer.cli.runs import resumed_run, table_run
from ocformer.cli.terminal import LayerProgress, print_figures
from ocformer.config import TrainConfig, merge
from ocformer.errors import OcformerError

if TYPE_CHECKING:
    from ocformer.estimate import Estimate


@app.command()
def train(
    data: Data = None,
    n_sequences: NSequences = None,
    layers: Layers = None,
    method: Annotated[
        str | None, typer.Option(help="dp, or brute (the oracle). [default: dp]")
    ] = None,
    cost: Cost = None,
    codes: Annotated[
        int | None,
        typer.Option(
            help="State codewords, or levels per axis for a uniform "
            "codebook. [default: 16]"
        ),
    ] = None,
    codebook: Codebook = None,
    atoms: Atoms = None,
    measure_radius: Annotated[
        float | None,
        typer.Option(
            help="Epsilon of the W1 net over each layer's states. "
            "[default: 0, exact merging only]"
        ),
    ] = None,
    dim: Dim = None,
    embedding: Embedding = None,
    space: Space = None,
    family: Family = None,
    grid: Grid = None,
    entries: Entries = None,
    scale: Scale = None,
    codebook_file: CodebookFile = None,
    step: Step = None,
    ridge: Ridge = None,
    action_cost: ActionCost = None,
    test_fraction: TestFraction = None,
    seed: Seed = None,
    config: Config = None,
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

    execution_flags = {
        "workers": workers,
        "backend": backend,
        "device": device,
        "address": address,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "force": force or None,
    }
    model = {
        "layers": layers,
        "method": method,
        "cost": cost,
        "codes": codes,
        "codebook": codebook,
        "atoms": atoms,
        "measure_radius": measure_radius,
        "dim": dim,
        "embedding": embedding,
        "space": space,
        "family": family,
        "grid": grid,
        "entries": entries,
        "scale": scale,
        "codebook_file": codebook_file,
        "step": step,
        "ridge": ridge,
        "action_cost": action_cost,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    # What defines the problem, by flag (n_sequences is --n-sequences); a resumed
    # run takes all of it from its checkpoint, a policy-table run all but --data,
    # --n-sequences, --seed and --test-fraction.
    problem = {"data": data, "n_sequences": n_sequences, **model, "config": config}
    problem_flags = {
        f"--{name.replace('_', '-')}": value for name, value in problem.items()
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
            flags = model_flags(**model)
            base, stored = read_config(config)
            source = str(config or "flags")
            stored = section(stored, "execution")
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
            with LayerProgress(settings.n_layers) as progress:
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
            fail(write_error(out, error))
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print_summary(report, out)


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
    """The table of a finished run's figures, and where its files went."""
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

    print_figures(f"ocformer train: {report['data']} ({report['method']})", rows)
    if out is not None:
        out_console.print(
            escape(f"report: {out / 'report.json'}  model: {report['model_path']}")
        )
