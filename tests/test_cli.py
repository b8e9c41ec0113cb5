"""Tests of ocformer.cli: train and predict, their reports and their input errors."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ocformer.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
# A run of about a second: 96 training sequences, 4 codewords, one layer.
SMALL = {"--data": "order", "--n-sequences": "120", "--codes": "4", "--layers": "1"}
REPORT_KEYS = {
    "method",
    "data",
    "layers",
    "n_train",
    "n_test",
    "quantized_value",
    "train_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
    "baseline_no_layers",
    "radii",
    "counts",
    "wall_seconds",
    "model_path",
    "plan",
}

runner = CliRunner()


def train_args(**changes):
    """``train`` arguments: SMALL with options replaced, or dropped when None."""
    options = {**SMALL, **{f"--{k.replace('_', '-')}": v for k, v in changes.items()}}
    args = ["train"]
    for option, value in options.items():
        if value is not None:
            args += [option, str(value)]
    return args


def snapshot(directory):
    """Every file under ``directory`` with its bytes."""
    return {
        path.relative_to(directory): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def assert_usage_error(result, match):
    """Exit status 2, nothing on stdout, one line on stderr matching ``match``."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    assert re.search(match, result.stderr), result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small run with --out and --json: its output directory and printed report."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = runner.invoke(app, [*train_args(), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Data and config files that training must reject."""
    folder = tmp_path_factory.mktemp("bad")
    tokens = np.random.default_rng(0).normal(size=(20, 3, 2))
    labels = np.arange(20) % 2
    files = {
        "empty": folder / "empty.npz",
        "one_class": folder / "one_class.npz",
        "inf": folder / "inf.npz",
        "unknown_key": folder / "unknown_key.toml",
    }
    np.savez(files["empty"], tokens=np.zeros((0, 3, 2)), targets=np.zeros(0, int))
    np.savez(files["one_class"], tokens=tokens, targets=np.zeros(20, dtype=int))
    infinite = tokens.copy()
    infinite[3, 1, 0] = np.inf
    np.savez(files["inf"], tokens=infinite, targets=labels)
    files["unknown_key"].write_text("n_layers = 1\n\n[quantizer]\nbogus = 3\n")
    return files


# Each case: options changed from SMALL ("{name}" names a bad_files entry), and the
# pinned message, problem and fix.
BAD_TRAIN = {
    "nan": (
        {"data": FIXTURES / "nan.npz", "n_sequences": None},
        r"error: `tokens` of dataset 'nan' must be finite, got 2 NaN or infinite "
        r"values; drop or impute them",
    ),
    "inf": (
        {"data": "{inf}", "n_sequences": None},
        r"`tokens` of dataset 'inf' must be finite, got 1 NaN or infinite values; "
        r"drop or impute them",
    ),
    "empty": (
        {"data": "{empty}", "n_sequences": None},
        r"dataset 'empty' must contain at least one sequence, got 0; check the data",
    ),
    "one_class": (
        {"data": "{one_class}", "n_sequences": None},
        r"must have at least 2 classes, got 1; add sequences of another class",
    ),
    "codes": (
        {"codes": 1},
        r"`codes` must be >= 2, got 1; use at least two codewords",
    ),
    "layers": (
        {"layers": -1},
        r"`n_layers` must be >= 0, got -1; use 0 for the readout alone",
    ),
    "dataset": (
        {"data": "nosuch"},
        r"unknown dataset 'nosuch'; use one of digits, sunspots, order or a path",
    ),
    "method": (
        {"method": "adam"},
        r"`method` must be one of dp, brute, got 'adam'; use dp",
    ),
    "unreadable": (
        {"data": FIXTURES / "broken.npz", "n_sequences": None},
        r"'.*broken.npz' must be an .npz archive of plain numeric arrays, got a file "
        r"numpy cannot read as one; save it with numpy.savez",
    ),
    "cost": (
        {"data": FIXTURES / "regression.npz", "n_sequences": None, "cost": "error"},
        r"`cost` 'error' needs class targets, got a regression task; use --cost mse",
    ),
    "config_key": (
        {"config": "{unknown_key}"},
        r"unknown key 'bogus' in '.*unknown_key.toml'; known keys of QuantizerConfig "
        r"are atoms, codebook, codes",
    ),
}


def bad_train_args(case, bad_files):
    """The train arguments of one BAD_TRAIN case."""
    changes, _ = BAD_TRAIN[case]
    names = {name: str(path) for name, path in bad_files.items()}
    return train_args(
        **{k: None if v is None else str(v).format(**names) for k, v in changes.items()}
    )


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_input_leaves_existing_output(case, bad_files, trained, tmp_path):
    """Bad input exits 2 with one line and leaves a good --out directory as it was."""
    out = tmp_path / "out"
    shutil.copytree(trained[0], out)
    before = snapshot(out)

    result = runner.invoke(app, [*bad_train_args(case, bad_files), "--out", str(out)])

    assert_usage_error(result, BAD_TRAIN[case][1])
    assert snapshot(out) == before


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_input_creates_no_output(case, bad_files, tmp_path):
    """Bad input exits 2 and does not create a fresh --out directory."""
    out = tmp_path / "fresh"

    result = runner.invoke(app, [*bad_train_args(case, bad_files), "--out", str(out)])

    assert_usage_error(result, BAD_TRAIN[case][1])
    assert not out.exists()


def test_out_that_is_a_file_is_rejected_before_training(tmp_path):
    """An --out path naming a file exits 2 and leaves the file alone."""
    out = tmp_path / "taken"
    out.write_text("keep me\n")

    result = runner.invoke(app, [*train_args(), "--out", str(out)])

    assert_usage_error(result, r"`--out` needs '.*taken' to be a directory, got a file")
    assert out.read_text() == "keep me\n"


def test_entry_point_reports_bad_input_on_stderr(tmp_path):
    """The installed command exits 2 with one error line on stderr and no output."""
    command = Path(sys.executable).with_name("ocformer")
    out = tmp_path / "fresh"

    finished = subprocess.run(
        [command, *train_args(codes=1), "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr == (
        "error: `codes` must be >= 2, got 1; use at least two codewords.\n"
    )
    assert not out.exists()


def test_error_message_keeps_square_brackets(tmp_path):
    """A message quoting option syntax such as [quantizer] is printed verbatim."""
    config = tmp_path / "flat.toml"
    config.write_text("quantizer = 3\n")

    result = runner.invoke(app, [*train_args(), "--config", str(config)])

    assert_usage_error(result, re.escape("under a [quantizer] header"))


@pytest.mark.parametrize("command", ["train", "predict"])
def test_help_lists_options(command):
    """``--help`` of each command exits 0 and names its options."""
    result = runner.invoke(app, [command, "--help"])

    assert result.exit_code == 0
    for option in {"train": ["--data", "--layers", "--out"], "predict": ["--model"]}[
        command
    ]:
        assert option in result.stdout


def test_json_report_has_every_key(trained):
    """``--json`` prints a JSON report holding all report figures."""
    out, report = trained

    assert set(report) >= REPORT_KEYS
    assert set(report["baseline_no_layers"]) == {"test_loss", "test_accuracy"}
    assert {"state", "measure", "action"} <= set(report["radii"])
    assert {"states_expanded", "transitions", "actions", "codes", "atoms"} <= set(
        report["counts"]
    )
    assert [set(layer) >= {"action", "parameters"} for layer in report["plan"]] == [
        True
    ]
    assert report["model_path"] == str(out / "model")


def test_out_report_matches_printed_json(trained):
    """report.json in --out holds the report that --json printed."""
    out, report = trained

    assert json.loads((out / "report.json").read_text()) == report


def test_config_file_is_honoured_and_flags_override_it(tmp_path):
    """Values from --config apply, and a flag given too wins over the file."""
    config = tmp_path / "run.toml"
    config.write_text("n_layers = 0\nseed = 3\n\n[quantizer]\ncodes = 3\n")
    args = train_args(codes=None, layers=1)

    result = runner.invoke(app, [*args, "--config", str(config), "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["codes"] == 3
    assert report["config"]["seed"] == report["config"]["embedding"]["seed"] == 3
    assert report["layers"] == 1


def test_predict_reproduces_trained_test_figures(trained):
    """predict on the training data's test split prints the report's test figures."""
    out, report = trained

    result = runner.invoke(
        app, ["predict", "--model", str(out), "--data", "order", "--json"]
    )

    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["n"] == report["n_test"]
    assert figures["accuracy"] == report["test_accuracy"]
    assert figures["loss"] == report["test_loss"]


BAD_PREDICT = {
    "shape": (
        ["--data", str(FIXTURES / "classification.npz")],
        r"the model takes sequences of shape \(4, 1\) \(tokens, features per "
        r"token\), got \(3, 2\) in dataset 'classification'; predict on data shaped",
    ),
    "nan": (
        ["--data", str(FIXTURES / "nan.npz")],
        r"`tokens` of dataset 'nan' must be finite",
    ),
    "split": (
        ["--data", "order", "--split", "validation"],
        r"`--split` must be test, train or all, got 'validation'; use test",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT))
def test_predict_rejects_bad_data(case, trained):
    """predict exits 2 with one line on data that does not fit the model."""
    args, match = BAD_PREDICT[case]

    result = runner.invoke(app, ["predict", "--model", str(trained[0]), *args])

    assert_usage_error(result, match)


def test_predict_rejects_other_classes(trained, tmp_path):
    """predict exits 2 when the data's class labels are not the model's."""
    data = tmp_path / "labels.npz"
    tokens = np.random.default_rng(1).normal(size=(30, 4, 1))
    np.savez(data, tokens=tokens, targets=np.arange(30) % 2 + 5)

    result = runner.invoke(
        app, ["predict", "--model", str(trained[0]), "--data", str(data)]
    )

    assert_usage_error(result, r"the model knows the classes \[0, 1\], got labels")


@pytest.mark.parametrize("damage", ["missing", "empty_dir", "garbage"])
def test_predict_rejects_unreadable_model(damage, tmp_path):
    """predict exits 2 with one line when --model holds no readable model."""
    model = tmp_path / "model"
    if damage != "missing":
        model.mkdir()
    if damage == "garbage":
        (model / "model.json").write_text("{not json")
        (model / "model.safetensors").write_bytes(b"\0" * 4)
    match = {
        "missing": r"model path '.*model' does not exist; pass the directory",
        "empty_dir": r"it holds no model.json, neither directly nor in model/",
        "garbage": r"cannot load a model from '.*model' \(.*\); pass the directory",
    }[damage]

    result = runner.invoke(app, ["predict", "--model", str(model), "--data", "order"])

    assert_usage_error(result, match)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("", "`--out` must name an output directory"),
        ("afile/sub", "lies under the file"),
    ],
)
def test_unusable_out_is_refused_before_training(tmp_path, monkeypatch, out, message):
    """An empty --out or one below a file fails at once, before any training."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(
        app, ["train", "--data", "order", "--n-sequences", "40", "--out", out]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_huge_seed_is_a_clear_error():
    """Seeds at or above 2**32 are refused with the limit named."""
    result = CliRunner().invoke(
        app, ["train", "--data", "order", "--layers", "1", "--seed", str(2**32)]
    )
    assert result.exit_code == 2
    assert "`seed` must be < 2**32" in result.output


ORDER_SMALL = ["train", "--data", "order", "--n-sequences", "60", "--codes", "4"]


def test_device_cpu_gives_the_default_report():
    """--device cpu is the default: the same plan and value."""
    default = json.loads(CliRunner().invoke(app, [*ORDER_SMALL, "--json"]).stdout)
    on_cpu = json.loads(
        CliRunner().invoke(app, [*ORDER_SMALL, "--device", "cpu", "--json"]).stdout
    )
    assert on_cpu["plan"] == default["plan"]
    assert on_cpu["quantized_value"] == default["quantized_value"]


def test_device_cuda_runs_where_there_is_cuda_and_fails_clearly_elsewhere():
    """--device cuda solves the same problem on a GPU, or names the missing device."""
    import torch

    result = CliRunner().invoke(app, [*ORDER_SMALL, "--device", "cuda", "--json"])
    if torch.cuda.is_available():
        assert result.exit_code == 0
        default = json.loads(CliRunner().invoke(app, [*ORDER_SMALL, "--json"]).stdout)
        report = json.loads(result.stdout)
        assert report["quantized_value"] == pytest.approx(default["quantized_value"])
    else:
        assert result.exit_code == 2
        assert "torch sees no CUDA device here; use --device cpu" in result.output


def test_unknown_device_is_refused():
    """A device torch does not know is a one-line error."""
    result = CliRunner().invoke(app, [*ORDER_SMALL, "--device", "abacus"])
    assert result.exit_code == 2
    assert "`device` must be cpu or cuda (cuda:N), got 'abacus'" in result.output


def test_predict_finds_the_training_file_from_another_directory(tmp_path, monkeypatch):
    """A relative .npz path given elsewhere still rebuilds the training subset."""
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(80, 4, 2))
    targets = (tokens[:, 0, 0] > tokens[:, -1, 0]).astype(np.int64)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "pairs.npz", tokens=tokens, targets=targets)

    monkeypatch.chdir(tmp_path)
    trained = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            "data/pairs.npz",
            "--n-sequences",
            "50",
            "--codes",
            "4",
            "--layers",
            "1",
            "--out",
            "out",
            "--json",
        ],
    )
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)

    monkeypatch.chdir(tmp_path / "data")
    predicted = CliRunner().invoke(
        app, ["predict", "--model", "../out", "--data", "pairs.npz", "--json"]
    )
    assert predicted.exit_code == 0, predicted.output
    figures = json.loads(predicted.stdout)
    assert figures["n"] == report["n_test"]
    assert figures["accuracy"] == report["test_accuracy"]
