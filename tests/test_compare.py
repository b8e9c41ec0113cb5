"""Tests of ocformer.compare and ``ocformer compare``: rows, optimality, outputs."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from ocformer.cli import app
from ocformer.compare import (
    FINITE_METHODS,
    METHODS,
    CompareConfig,
    Comparison,
    compare,
    comparison_markdown,
    row_fields,
    write_comparison,
)
from ocformer.config import ActionConfig, QuantizerConfig, TrainConfig
from ocformer.data import load_dataset
from ocformer.errors import ConfigError

runner = CliRunner()
SMALL_GRID = {"temperature": (1.0,), "angle": (0.0,), "position": (-4.0, 0.0, 4.0)}
CONFIG = TrainConfig(
    n_layers=2,
    quantizer=QuantizerConfig(codes=3),
    actions=ActionConfig(grid=SMALL_GRID),
)
FAST = CompareConfig(seeds=2, steps=15, cma_evaluations=30)


@pytest.fixture(scope="module")
def order_comparison():
    """Every method on 60 order sequences, two seeds."""
    return compare(load_dataset("order", n_sequences=60), CONFIG, FAST)


def test_every_method_and_seed_has_a_row(order_comparison):
    """One row per method and seed, with the fields of a classification run."""
    rows = order_comparison.rows
    assert [(r["seed"], r["method"]) for r in rows] == [
        (seed, method) for seed in range(2) for method in METHODS
    ]
    for row in rows:
        assert list(row) == row_fields("classification", "mse")
        assert (row["quantized_value"] is None) == (row["method"] == "adam")
        assert row["evaluations"] > 0 and row["wall_seconds"] >= 0


def test_dp_is_never_beaten_on_the_quantized_model(order_comparison):
    """On each seed, every finite-set plan costs at least the DP plan's value."""
    for seed in range(2):
        rows = {r["method"]: r for r in order_comparison.rows if r["seed"] == seed}
        for method in FINITE_METHODS:
            assert rows[method]["quantized_value"] >= rows["dp"]["quantized_value"]
    check = order_comparison.dp_optimal()
    assert check == {"holds": True, "checked": 8, "violations": []}


def test_random_search_gets_the_dps_transitions(order_comparison):
    """Random plans use as many transitions as the DP, rounded down to whole plans."""
    for seed in range(2):
        rows = {r["method"]: r for r in order_comparison.rows if r["seed"] == seed}
        dp, random = rows["dp"]["evaluations"], rows["random"]["evaluations"]
        assert dp - CONFIG.n_layers < random <= dp


def test_a_violation_is_reported():
    """A finite-set row below the DP's value makes the check fail, naming it."""
    rows = [
        {"method": "dp", "seed": 0, "quantized_value": 0.5},
        {"method": "cma", "seed": 0, "quantized_value": 0.4},
        {"method": "adam", "seed": 0, "quantized_value": None},
    ]
    comparison = Comparison(
        data="x",
        task="classification",
        cost="mse",
        config={},
        options={},
        rows=rows,
        baselines=[],
    )
    check = comparison.dp_optimal()
    assert check["holds"] is False and check["checked"] == 1
    assert check["violations"][0]["method"] == "cma"


def test_same_seeds_give_the_same_rows(order_comparison):
    """A second run matches the first in everything but the wall times."""
    again = compare(load_dataset("order", n_sequences=60), CONFIG, FAST)

    def timeless(comparison):
        return [
            {k: v for k, v in row.items() if k != "wall_seconds"}
            for row in comparison.rows
        ]

    assert timeless(again) == timeless(order_comparison)


def test_error_cost_shows_both_objectives():
    """With the 0-1 cost, rows carry the surrogate mse and say what each minimised."""
    config = dataclasses.replace(CONFIG, cost="error")
    options = CompareConfig(seeds=1, methods=("dp", "adam", "cma"), steps=5)
    comparison = compare(load_dataset("order", n_sequences=60), config, options)
    rows = {r["method"]: r for r in comparison.rows}
    assert rows["dp"]["objective"] == "error" and rows["adam"]["objective"] == "mse"
    assert rows["cma"]["objective"] == "error"
    for row in rows.values():
        assert {"train_mse", "test_mse"} <= set(row)
        assert row["train_loss"] == pytest.approx(1 - row["train_accuracy"])


def test_regression_rows_have_no_accuracy():
    """Sunspots (regression) rows hold losses only."""
    options = CompareConfig(seeds=1, methods=("dp", "adam-round"), steps=5)
    comparison = compare(load_dataset("sunspots", n_sequences=80), CONFIG, options)
    assert [r["method"] for r in comparison.rows] == ["dp", "adam-round"]
    for row in comparison.rows:
        assert list(row) == row_fields("regression", "mse")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": ("dp", "sgd")}, "`methods` must be a non-empty list"),
        ({"methods": ()}, "`methods` must be a non-empty list"),
        ({"methods": ("dp", "dp")}, "lists a method twice"),
        ({"methods": ("adam", "random")}, "`random` draws as many transitions"),
        ({"seeds": 0}, "`seeds` must be an integer >= 1"),
        ({"seeds": 3_000_000_000}, "`seeds` must be at most 1000"),
        ({"learning_rate": -1.0}, "`learning_rate` must be a positive"),
    ],
)
def test_bad_options_are_refused(options, message):
    """Each bad comparison option names itself."""
    with pytest.raises(ConfigError, match=message):
        CompareConfig(**options)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_layers": 0}, "`n_layers` must be >= 1"),
        (
            {"quantizer": QuantizerConfig(codes=3, measure_radius=0.1)},
            "needs the exact DP",
        ),
        ({"method": "brute"}, "compare runs the dp solver"),
        ({"actions": ActionConfig(family="ternary")}, "`cma` searches the grid"),
    ],
)
def test_configs_that_break_the_comparison_are_refused(change, message):
    """No layers, a measure net, brute force, or CMA-ES off the grid are refused."""
    config = dataclasses.replace(CONFIG, **change)
    with pytest.raises(ConfigError, match=message):
        compare(load_dataset("order", n_sequences=60), config, FAST)


def test_outputs_are_written(order_comparison, tmp_path):
    """compare.json, compare.md and three PNG plots land in the directory."""
    written = write_comparison(order_comparison, tmp_path / "out")
    names = sorted(path.name for path in written)
    assert names == [
        "compare-test.png",
        "compare-time.png",
        "compare-value.png",
        "compare.json",
        "compare.md",
    ]
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert stored["rows"] == json.loads(json.dumps(order_comparison.rows))
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert markdown == comparison_markdown(order_comparison)
    assert "| adam-ste | mse |" in markdown and "Yes: on every seed" in markdown


# One seed, one layer, three codewords: a CLI comparison of about a second.
CLI_SMALL = ["--data", "order", "--n-sequences", "60", "--seeds", "1"]
CLI_SMALL += ["--layers", "1", "--codes", "3"]


def test_cli_compare_writes_and_prints_json(tmp_path):
    """`ocformer compare --json` prints the rows and writes the files."""
    out = tmp_path / "cmp"
    arguments = ["--methods", "dp,adam,random", "--steps", "5", "--out", str(out)]
    result = runner.invoke(app, ["compare", *CLI_SMALL, *arguments, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert [row["method"] for row in printed["rows"]] == ["dp", "adam", "random"]
    assert json.loads((out / "compare.json").read_text())["rows"] == printed["rows"]


def test_cli_compare_prints_a_table():
    """Without --json the summary table and the optimality check are printed."""
    result = runner.invoke(app, ["compare", *CLI_SMALL, "--methods", "dp,random"])
    assert result.exit_code == 0, result.output
    assert "ocformer compare: order" in result.output
    assert "seed by seed: holds (1 checked)" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--methods", "dp,sgd"], "`methods` must be a non-empty list"),
        (["--seeds", "0"], "`seeds` must be an integer >= 1"),
        (["--cost", "error", "--data", "sunspots"], "needs class targets"),
        (["--grid", "speed=1"], "unknown parameter 'speed'"),
    ],
)
def test_cli_compare_bad_input_exits_2(arguments, message, tmp_path):
    """Bad options end with one error line, exit status 2 and no files."""
    out = tmp_path / "cmp"
    result = runner.invoke(
        app, ["compare", "--data", "order", *arguments, "--out", str(out)]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()
