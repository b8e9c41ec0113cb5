"""Estimates before solving: bounds that hold, and the memory check of a real run."""

import json
import os

import pytest
from typer.testing import CliRunner

import ocformer.estimate
from ocformer.cli import app
from ocformer.estimate import (
    STATE_OVERHEAD,
    WORKER_FOOTPRINT,
    available_memory,
    estimate,
    format_bytes,
    format_count,
    state_bounds,
)
from ocformer.solver import solve
from tests.test_solver import random_problem

SMALL = ["--data", "order", "--n-sequences", "120", "--codes", "4", "--layers", "1"]

runner = CliRunner()


def test_state_bounds_are_the_lesser_of_plans_and_code_arrays():
    """S_t <= min(L^t, K^P): one atom of 3 tokens over 4 codes has 64 arrays."""
    problem = random_problem(
        0, n_layers=3, levels=2, temperatures=(0.5, 1.0), angles=(0.0, 1.0), atoms=1
    )
    assert problem.codebook.size == 4 and problem.n_actions == 9
    assert state_bounds(problem) == [1, 9, 64, 64]


def test_bounds_hold_for_the_solve():
    """The bounds dominate the states and transitions the DP really visits."""
    problem = random_problem(
        3, n_layers=3, levels=3, temperatures=(0.5, 3.0), angles=(0.0, 1.0)
    )
    bounds = estimate(problem, available_bytes=10**12)
    solution = solve(problem, "dp")
    for row, states in zip(bounds.layers, solution.states_per_layer, strict=True):
        assert row.states >= states
    assert bounds.transitions >= solution.transitions
    assert bounds.fits


def test_bytes_are_counted_as_documented():
    """A state is its codes plus 64 bytes; a final state its value plus 64; a
    transition 8 bytes; the peak holds every table."""
    problem = random_problem(
        1, n_layers=2, levels=3, temperatures=(0.5, 3.0), angles=(0.0,)
    )
    codes = problem.initial.codes
    bounds = estimate(problem, available_bytes=None)
    assert bounds.bytes_per_state == codes.size * codes.itemsize + STATE_OVERHEAD
    first, _, final = bounds.layers
    assert first.bytes_per_state == bounds.bytes_per_state
    assert final.bytes_per_state == 8 + STATE_OVERHEAD
    assert final.transitions == 0 and final.table_bytes == 0
    assert first.table_bytes == 8 * first.transitions == 8 * problem.n_actions
    tables = sum(row.table_bytes for row in bounds.layers)
    assert bounds.peak_bytes > tables + final.state_bytes


def test_worker_processes_raise_the_peak():
    """Each worker process adds at least its own footprint."""
    problem = random_problem(
        1, n_layers=2, levels=3, temperatures=(0.5, 3.0), angles=(0.0,)
    )
    alone = estimate(problem, available_bytes=1).peak_bytes
    pooled = estimate(problem, workers=3, available_bytes=1).peak_bytes
    assert pooled >= alone + 3 * WORKER_FOOTPRINT


def test_available_memory_reads_meminfo_then_sysconf(tmp_path):
    """MemAvailable (in kB) comes first; without the file, the free pages count."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")
    assert available_memory(str(meminfo)) == 1024 * 1024
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fallback = available_memory(str(tmp_path / "missing"))
    assert fallback == pytest.approx(pages, rel=0.5)


def test_sizes_print_in_binary_units_and_huge_bounds_in_powers_of_ten():
    """Bounds beyond any float still print."""
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(100) == "100 B"
    assert format_bytes(None) == "unknown"
    assert format_count(1024) == "1,024"
    assert format_count(32**400) == "1.15e+602"
    assert format_bytes(32**400).endswith("e+602 B")


def test_dry_run_prints_the_estimate_and_solves_nothing():
    """--dry-run --json prints the bounds per layer and exits 0 without a report."""
    result = runner.invoke(app, ["train", *SMALL, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    bounds = json.loads(result.stdout)
    assert [row["layer"] for row in bounds["layers"]] == [0, 1]
    assert bounds["layers"][1]["states"] == 33
    assert bounds["peak_bytes"] > 0 and bounds["available_bytes"] > 0
    assert bounds["fits"] is True
    assert "quantized_value" not in bounds


def test_dry_run_table():
    """Without --json the estimate is a table and the verdict."""
    result = runner.invoke(app, ["train", *SMALL, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "upper bounds of the DP" in result.stdout
    assert "the peak fits" in result.stdout


def test_run_beyond_available_memory_stops_unless_forced(monkeypatch):
    """A run whose estimated peak exceeds the memory stops before solving, exit 2;
    --force solves anyway."""
    monkeypatch.setattr(ocformer.estimate, "available_memory", lambda: 1000)
    stopped = runner.invoke(app, ["train", *SMALL, "--json"])
    assert stopped.exit_code == 2
    assert stopped.stdout == ""
    assert stopped.stderr.count("\n") == 1
    assert "more than the 1000 B available" in stopped.stderr
    assert "pass --force to solve anyway" in stopped.stderr
    forced = runner.invoke(app, ["train", *SMALL, "--json", "--force"])
    assert forced.exit_code == 0, forced.output
