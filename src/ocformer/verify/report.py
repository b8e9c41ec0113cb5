"""The outputs of a verification run: ``verify.json``, ``verify.md`` and one PNG per
claim, all written atomically.

The JSON and the Markdown hold the reproducible record only: the same settings give
the same bytes. Wall times live in the JSON's separate ``wall_seconds`` field and are
left out of the Markdown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocformer.atomic import write_text_atomic
from ocformer.plots import save_png

if TYPE_CHECKING:
    from ocformer.verify.suite import Verification

JSON_FILE = "verify.json"
MARKDOWN_FILE = "verify.md"


def to_json(verification: Verification) -> str:
    """``verify.json``: settings, every claim's record, and the wall times apart."""
    record = verification.to_dict()
    record["wall_seconds"] = {
        "total": round(verification.seconds, 3),
        "claims": {
            claim.name: round(claim.seconds, 3) for claim in verification.claims
        },
    }
    return json.dumps(_finite(record), indent=1) + "\n"


def to_markdown(verification: Verification) -> str:
    """``verify.md``: per claim what was checked, the criterion, the figures and the
    verdict."""
    settings = verification.settings
    lines = [
        "# ocformer verify",
        "",
        f"Data: {settings.data}. Mode: {settings.mode}. Seed: {settings.seed}.",
        f"Result: {verification.n_passed} of {len(verification.claims)} claims passed.",
        "",
        "| claim | verdict | headline | plot |",
        "| --- | --- | --- | --- |",
    ]
    for claim in verification.claims:
        verdict = "passed" if claim.passed else "FAILED"
        summary = claim.summary.replace("|", "\\|")  # a bare | ends the cell
        lines.append(
            f"| {claim.number}. {claim.title} | {verdict} | {summary} | "
            f"[{claim.plot_file}]({claim.plot_file}) |"
        )
    for claim in verification.claims:
        verdict = "passed" if claim.passed else "FAILED"
        lines += [
            "",
            f"## {claim.number}. {claim.title}: {verdict}",
            "",
            f"**Checked.** {claim.checked}",
            "",
            f"**Criterion.** {claim.criterion}",
            "",
            "**Figures.**",
            "",
        ]
        lines += [
            f"- {name}: {format_value(value)}"
            for name, value in headline(claim.figures).items()
        ]
        for note in claim.notes:
            lines += ["", f"Note: {note}."]
        lines += ["", f"![claim {claim.number}]({claim.plot_file})"]
    return "\n".join(lines) + "\n"


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures (and small dictionaries of scalars) of a claim; the long
    series stay in the JSON."""
    return {
        name: value
        for name, value in figures.items()
        if _is_scalar(value)
        or (isinstance(value, dict) and all(map(_is_scalar, value.values())))
    }


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def format_value(value: Any) -> str:
    """A figure for a person: 6 significant digits, dictionaries as k=v lists."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {format_value(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "none"
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` with infinite or NaN floats as strings, so that the JSON is valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_outputs(verification: Verification, out: Path) -> list[Path]:
    """Write the JSON, the Markdown and the PNGs into ``out`` (created if missing).

    Returns:
        The paths written.

    Raises:
        OSError: if a file cannot be written; files already in place stay whole.
    """
    from ocformer.verify.suite import render

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for claim in verification.claims:
        path = out / claim.plot_file
        save_png(render(claim), path)
        written.append(path)
    write_text_atomic(out / MARKDOWN_FILE, to_markdown(verification))
    write_text_atomic(out / JSON_FILE, to_json(verification))
    return [*written, out / MARKDOWN_FILE, out / JSON_FILE]
