"""Tests of ocformer.verify: criteria, distances, outputs and the command."""

import itertools
import json
import math
import re
import types

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ocformer.verify
from ocformer.cli import app
from ocformer.config import QuantizerConfig, TrainConfig
from ocformer.coreset import measure_distance
from ocformer.data import order, split_dataset
from ocformer.embedding import EmbeddingConfig
from ocformer.errors import ConfigError
from ocformer.plots import png_bytes
from ocformer.train import build_problem
from ocformer.verify import (
    ClaimResult,
    Settings,
    consistency,
    continuity,
    optimality,
    quantization,
    suite,
    verify,
)
from ocformer.verify.distance import plan_distance
from ocformer.verify.fixed import FixedQuantizers
from ocformer.verify.rates import log_slope
from ocformer.verify.report import to_json, to_markdown

runner = CliRunner()
CLAIM_FILES = [
    "claim1-dp-optimal.png",
    "claim2-closed-loop.png",
    "claim3-quantization.png",
    "claim4-continuity.png",
    "claim5-consistency.png",
]


# Settings and the public API.


def test_all_names_exist():
    """Every name in ocformer.verify.__all__ is defined."""
    for name in ocformer.verify.__all__:
        assert hasattr(ocformer.verify, name)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"data": "sunspots"}, r"`data` \(--data\) must be one of order, digits"),
        ({"seed": -1}, r"`seed` \(--seed\) must be between 0 and"),
        ({"seed": 2**31}, r"`seed` \(--seed\) must be between 0 and"),
        ({"seed": True}, r"`seed` \(--seed\) must be an integer"),
    ],
)
def test_settings_reject_bad_options(options, match):
    """Settings name the option, the bad value and the fix."""
    with pytest.raises(ConfigError, match=match):
        Settings(**options)


def test_verify_rejects_unknown_claims():
    """Asking for a claim that does not exist is an error, before any work."""
    with pytest.raises(ConfigError, match=r"`claims` must be numbers 1 to 5, got 6"):
        verify(Settings(quick=True), claims=(1, 6))


def test_derived_seeds_are_stable_and_distinct():
    """Seeds derive from the run's seed and the path alone."""
    settings = Settings(seed=3)
    assert settings.seed_for(4, 1) == Settings(seed=3).seed_for(4, 1)
    assert settings.seed_for(4, 1) != settings.seed_for(4, 2)
    assert settings.seed_for(4, 1) != Settings(seed=4).seed_for(4, 1)


# Rates and distances.


def test_log_slope_of_a_power_law():
    """The slope of y = 3 x^2 is 2; points with y <= 0 are left out."""
    x = [0.1, 0.2, 0.4, 0.8, 1.6]
    y = [3 * v**2 for v in x]
    assert log_slope([*x, 3.2], [*y, 0.0]) == pytest.approx(2.0)


def test_log_slope_needs_two_usable_points():
    """No slope from one point, or from equal abscissae."""
    assert log_slope([1.0, 2.0], [1.0, 0.0]) is None
    assert log_slope([1.0, 1.0], [1.0, 2.0]) is None


def brute_force_w1(first, first_targets, second, second_targets, radius):
    """W1 between two uniform measures of equal size by trying every matching."""
    n_tokens = first.shape[1]
    best = math.inf
    for matching in itertools.permutations(range(len(second))):
        total = 0.0
        for i, j in enumerate(matching):
            gaps = np.linalg.norm(first[i] - second[j], axis=-1).sum() / n_tokens
            total += gaps + 2 * radius * (first_targets[i] != second_targets[j])
        best = min(best, total / len(first))
    return best


def test_measure_distance_matches_brute_force_matching():
    """POT's W1 equals the best matching of two uniform measures of five atoms."""
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3, 2))
    first_targets, second_targets = rng.integers(0, 2, 5), rng.integers(0, 2, 5)
    expected = brute_force_w1(first, first_targets, second, second_targets, 1.0)
    got = measure_distance(
        first, first_targets, second, second_targets, n_classes=2, radius=1.0
    )
    assert got == pytest.approx(expected, rel=1e-12)


def test_measure_distance_of_equal_measures_is_zero():
    """A measure is at distance 0 from itself, also with its atoms reordered."""
    rng = np.random.default_rng(1)
    tokens, targets = rng.normal(size=(6, 4, 2)), rng.integers(0, 3, 6)
    order_ = rng.permutation(6)
    distance = measure_distance(
        tokens, targets, tokens[order_], targets[order_], n_classes=3, radius=1.0
    )
    assert distance == pytest.approx(0.0, abs=1e-12)


def test_plan_distance_is_the_frobenius_norm_of_the_weight_gaps():
    """The distance of two plans sums the squared gaps of their flattened layers."""
    problem = small_problem()
    weights = problem.actions.weights
    flat = weights.flatten()
    expected = torch.sqrt(
        ((flat[1] - flat[3]) ** 2).sum() + ((flat[2] - flat[2]) ** 2).sum()
    )
    assert plan_distance(weights, (1, 2), (3, 2)) == pytest.approx(float(expected))
    assert plan_distance(weights, (1, 2), (1, 2)) == 0.0


# Fixed quantizers.


def small_problem():
    config = TrainConfig(
        n_layers=2, embedding=EmbeddingConfig(dim=2), quantizer=QuantizerConfig(codes=4)
    )
    train = split_dataset(order(n_sequences=40, seed=2)).train
    return build_problem(train, config).problem


def test_fixed_quantizers_reproduce_build_problem():
    """On the data they were fitted to, the fixed quantizers give train's problem."""
    config = TrainConfig(
        n_layers=1, embedding=EmbeddingConfig(dim=2), quantizer=QuantizerConfig(codes=4)
    )
    train = split_dataset(order(n_sequences=60, seed=5)).train
    quantizers = FixedQuantizers.fit(train, config)
    expected = build_problem(train, config).problem.initial
    got = quantizers.problem_of(train).initial
    assert got.key == expected.key
    assert np.array_equal(got.codes, expected.codes)


def test_fixed_quantizers_refuse_a_coreset():
    """A coreset would be chosen again for each measure: refused."""
    config = TrainConfig(quantizer=QuantizerConfig(codes=4, atoms=8))
    with pytest.raises(ConfigError, match=r"fixed quantizers keep every sequence"):
        FixedQuantizers.fit(order(n_sequences=40), config)


# The criteria, on figures made up to pass and to fail.


def test_continuity_passes_a_lipschitz_value():
    """|dV| = 0.5 W1 everywhere: the bound of the upper half holds below."""
    rows = [{"w1": w, "change": 0.5 * w} for w in np.geomspace(1e-3, 1, 10)]
    figures = continuity.summarize(rows, resolution=0.0)
    assert figures["passed"]
    assert figures["lipschitz"] == pytest.approx(0.5)
    assert figures["slope"] == pytest.approx(1.0)


def test_continuity_fails_a_jump():
    """A value that jumps by 0.01 however small the perturbation fails."""
    rows = [{"w1": w, "change": 0.01 + 0.1 * w} for w in np.geomspace(1e-4, 1, 10)]
    assert not continuity.summarize(rows, resolution=1e-3)["passed"]


def test_continuity_allows_the_resolution_of_the_quantized_value():
    """A change below 1/M passes however small W1 is."""
    rows = [{"w1": w, "change": 0.1 * w} for w in np.geomspace(1e-3, 1, 10)]
    rows.append({"w1": 1e-5, "change": 0.002})
    assert continuity.summarize(rows, resolution=1 / 400)["passed"]
    assert not continuity.summarize(rows, resolution=1 / 1000)["passed"]


def consistency_levels(spreads, excess):
    return [
        {"m": 32 * 2**i, "spread": s, "mean_excess": e}
        for i, (s, e) in enumerate(zip(spreads, excess, strict=True))
    ]


def test_consistency_passes_when_value_and_plans_settle():
    """Spread as 1/sqrt(M), excess cost falling: passed."""
    spreads = [0.1 / math.sqrt(2**i) for i in range(6)]
    figures = consistency.summarize(
        consistency_levels(spreads, [0.02, 0.01, 0.01, 0.004, 0.0, 0.0])
    )
    assert figures["passed"]
    assert figures["spread_slope"] == pytest.approx(-0.5)


def test_consistency_fails_a_spread_that_does_not_shrink():
    """A value as variable at large M as at small M fails."""
    figures = consistency.summarize(
        consistency_levels([0.05] * 6, [0.01] * 3 + [0] * 3)
    )
    assert not figures["passed"]


def test_consistency_fails_plans_that_do_not_settle():
    """Plans that cost more at large M than at small M fail."""
    spreads = [0.1 / math.sqrt(2**i) for i in range(6)]
    figures = consistency.summarize(
        consistency_levels(spreads, [0, 0, 0, 0.01, 0.01, 0.01])
    )
    assert not figures["passed"]


def quantization_ladders(joint_costs):
    """Ladders whose plans cost ``joint_costs`` on the joint ladder."""

    def row(cost, radius):
        return {
            "true_cost": cost,
            "state_radius": radius,
            "measure_radius": radius,
            "action_radius": radius,
        }

    single = [row(0.5, 1.0), row(0.4, 0.5)]
    return {
        "state": [dict(r) for r in single],
        "measure": [dict(r) for r in single],
        "action": [dict(r) for r in single],
        "joint": [row(cost, 1.0 / (i + 1)) for i, cost in enumerate(joint_costs)],
    }


def test_quantization_passes_when_the_finest_plan_is_near_the_best():
    """Identity 1.0, best 0.3: a finest plan at 0.35 closes 93% of the gap."""
    figures, _ = quantization.summarize(
        quantization_ladders([0.9, 0.5, 0.35]), best=0.3, identity=1.0
    )
    assert figures["passed"]
    assert figures["finest_relative_gap"] == pytest.approx(0.05 / 0.7)


def test_quantization_fails_a_finest_plan_far_from_the_best():
    """A finest plan that closes only 80% of the gap fails."""
    figures, _ = quantization.summarize(
        quantization_ladders([0.9, 0.5, 0.44]), best=0.3, identity=1.0
    )
    assert not figures["passed"]


def test_quantization_fails_when_refining_makes_it_worse():
    """A finest plan worse than the coarsest fails, however small its gap."""
    figures, _ = quantization.summarize(
        quantization_ladders([0.3, 0.31]), best=0.3, identity=1.0
    )
    assert not figures["passed"]


def test_quantization_notes_gaps_that_reach_zero():
    """A ladder that reaches the best found is said to, with its rate left out."""
    ladders = quantization_ladders([0.9, 0.3])
    ladders["state"] = [
        {**ladders["state"][0], "true_cost": 0.4},
        {**ladders["state"][1], "true_cost": 0.3},
    ]
    figures, notes = quantization.summarize(ladders, best=0.3, identity=1.0)
    assert figures["rates"]["state"] is None
    assert any(note.startswith("state: the gap reaches 0") for note in notes)


def test_quantization_relative_gap_without_improvement():
    """With no improvement over the identity, 0/0 is 0 and a gap is infinite."""
    assert quantization.relative(0.0, 0.0) == 0.0
    assert quantization.relative(0.1, 0.0) == math.inf


# Claim 1 on a few instances.


def test_dp_equals_brute_force_on_a_few_instances(monkeypatch):
    """Three random instances: DP and brute force agree to the bit."""
    monkeypatch.setattr(optimality, "QUICK", optimality.Sizes(3, (16, 24)))
    result = optimality.check(Settings(quick=True, seed=11))
    assert result.passed
    assert result.figures["max_abs_difference"] == 0.0
    assert result.figures["instances"] == 3


# Reports.


def fake_result(number, passed):
    return ClaimResult(
        number=number,
        name=["dp_optimal", "closed_loop", "quantization", "continuity", "consistency"][
            number - 1
        ],
        title=f"claim {number}",
        checked="made up",
        criterion="x <= 1",
        passed=passed,
        figures={"x": 2.0 if not passed else 0.5, "rows": [1, 2], "inf": math.inf},
        summary=f"x {number}",
        notes=("a caveat",) if not passed else (),
        seconds=1.5,
    )


def fake_verification(failed=()):
    claims = tuple(fake_result(n, n not in failed) for n in range(1, 6))
    return suite.Verification(Settings(quick=True), claims, 7.5)


def test_json_keeps_wall_seconds_apart():
    """The JSON has the settings, the claims and the wall times in one field."""
    record = json.loads(to_json(fake_verification()))
    assert record["wall_seconds"] == {
        "total": 7.5,
        "claims": {
            "dp_optimal": 1.5,
            "closed_loop": 1.5,
            "quantization": 1.5,
            "continuity": 1.5,
            "consistency": 1.5,
        },
    }
    assert (record["data"], record["mode"], record["seed"]) == ("order", "quick", 0)
    assert [claim["passed"] for claim in record["claims"]] == [True] * 5
    assert record["claims"][0]["figures"]["inf"] == "inf"


def test_markdown_reports_a_failed_claim_with_its_figures():
    """A failed claim is shown as FAILED, with its figures and its caveats."""
    text = to_markdown(fake_verification(failed=(4,)))
    assert "Result: 4 of 5 claims passed." in text
    assert "## 4. claim 4: FAILED" in text
    assert "- x: 2" in text
    assert "Note: a caveat." in text
    assert "1.5" not in text  # no wall time: the report is reproducible


# The command.


def fake_checks(monkeypatch, failed=()):
    """Replace the five checks by instant ones."""
    checks = {}
    for number in range(1, 6):
        result = fake_result(number, number not in failed)
        checks[number] = types.SimpleNamespace(
            check=lambda settings, result=result: result,
            draw=lambda result, figure: figure.add_subplot().plot([0, 1], [0, 1]),
        )
    monkeypatch.setattr(suite, "CHECKS", checks)


def test_cli_exit_status_1_when_a_claim_fails(monkeypatch, tmp_path):
    """A failed claim ends the run with status 1, every output written."""
    fake_checks(monkeypatch, failed=(2,))
    result = runner.invoke(app, ["verify", "--quick", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert [c["passed"] for c in record["claims"]] == [True, False, True, True, True]
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted([*CLAIM_FILES, "verify.json", "verify.md"])


def test_cli_exit_status_0_and_a_table(monkeypatch, tmp_path):
    """All claims passed: status 0 and a table on the terminal."""
    fake_checks(monkeypatch)
    result = runner.invoke(app, ["verify", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "5 of 5 claims passed" in result.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--data", "sunspots"], r"`data` \(--data\) must be one of order, digits"),
        (["--seed", "-3"], r"`seed` \(--seed\) must be between 0"),
    ],
)
def test_cli_rejects_bad_options(monkeypatch, tmp_path, args, match):
    """Bad options: one line, status 2, nothing written."""
    fake_checks(monkeypatch)
    out = tmp_path / "out"
    result = runner.invoke(app, ["verify", "--out", str(out), *args])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert re.search(match, result.output)
    assert not out.exists()


def test_cli_rejects_an_out_under_a_file(monkeypatch, tmp_path):
    """--out below a file is refused before any work."""
    fake_checks(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["verify", "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "lies at or under the file" in result.output


def test_cli_rejects_a_report_path_that_is_a_directory(monkeypatch, tmp_path):
    """--out whose verify.json is a directory is refused."""
    fake_checks(monkeypatch)
    (tmp_path / "verify.json").mkdir()
    result = runner.invoke(app, ["verify", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "to be a file, got a directory" in result.output


# The real checks.


def test_same_seed_same_bytes():
    """Two runs of the continuity check with one seed: the same JSON (wall times
    aside), the same Markdown and the same PNG."""
    first = verify(Settings(quick=True, seed=4), claims=(4,))
    second = verify(Settings(quick=True, seed=4), claims=(4,))

    def record(verification):
        data = json.loads(to_json(verification))
        data.pop("wall_seconds")
        return data

    assert record(first) == record(second)
    assert to_markdown(first) == to_markdown(second)
    png = png_bytes(suite.render(first.claims[0]))
    assert png == png_bytes(suite.render(second.claims[0]))
    assert png.startswith(b"\x89PNG")


@pytest.mark.slow
def test_quick_run_passes_every_claim(tmp_path):
    """``ocformer verify --quick --json`` on order: all five pass, files written."""
    result = runner.invoke(app, ["verify", "--quick", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert [c["number"] for c in record["claims"]] == [1, 2, 3, 4, 5]
    failed = [c["name"] for c in record["claims"] if not c["passed"]]
    assert not failed, failed
    for name in CLAIM_FILES:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "verify.json").read_text())["passed"] is True
    assert "5 of 5 claims passed" in (tmp_path / "verify.md").read_text()
