"""``ocformer verify``: check the five claims of the method numerically.

    ocformer verify --quick --out runs/verify

Exit status 0 when every claim passed, 1 when one failed, 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ocformer.cli import app, fail, out_console
from ocformer.cli.options import check_out_directory, nearest_existing, write_error
from ocformer.cli.terminal import StepProgress
from ocformer.errors import OcformerError

if TYPE_CHECKING:
    from ocformer.verify import Verification


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
        typer.Option("--quick", help="Small sizes (under a minute on two cores)."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print verify.json on standard output.")
    ] = False,
) -> None:
    """Check the five claims of the method numerically (the README's "Verifying the
    claims"), e.g. ocformer verify --quick --out runs/verify.

    Exit status: 0 when every claim passed, 1 when the run completed but a claim
    failed (its figures are still written), 2 on bad input.
    """
    from ocformer.verify import Settings, write_outputs
    from ocformer.verify import verify as run_verification
    from ocformer.verify.report import to_json

    try:
        settings = Settings(data=data, quick=quick, seed=seed)
        check_verify_out(out)
        with StepProgress("verify", 5, "claim {}: {}", finish=True) as progress:
            result = run_verification(settings, started=progress)
    except OcformerError as error:
        fail(error)

    try:
        write_outputs(result, out)
    except OSError as error:
        fail(write_error(out, error))
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

    existing = nearest_existing(out.absolute())
    if str(out).strip() not in ("", ".") and not existing.is_dir():
        raise OcformerError(
            f"`--out` {str(out)!r} lies at or under the file {str(existing)!r}; pass "
            "a directory path."
        )
    check_out_directory(out, example="runs/verify", files=(JSON_FILE, MARKDOWN_FILE))


def _print_verification(result: Verification, out: Path) -> None:
    """The table of verdicts per claim, and where the report went."""
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
