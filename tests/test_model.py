"""Tests of ocformer.model: the exported module, its files and its predictions."""

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ocformer
from ocformer.cli import app
from ocformer.data import Dataset, order
from ocformer.dynamics import layer_step
from ocformer.embedding import project
from ocformer.errors import DataError
from ocformer.model import CONFIG_FILE, WEIGHTS_FILE, align_dataset

runner = CliRunner()
SMALL = ocformer.TrainConfig(n_layers=1, quantizer=ocformer.QuantizerConfig(codes=4))


def snapshot(directory):
    """Every file under ``directory`` with its bytes."""
    return {
        path.relative_to(directory): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def predict(model_dir, data):
    """The figures ``ocformer predict --json`` prints for the test split."""
    args = ["predict", "--model", str(model_dir), "--data", str(data), "--json"]
    result = runner.invoke(app, [*args, "--split", "test"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A classifier trained through the Python API on an .npz file, and saved."""
    folder = tmp_path_factory.mktemp("classifier")
    data = order(n_sequences=120, seed=0)
    path = folder / "order120.npz"
    np.savez(path, tokens=data.tokens, targets=data.targets)
    result = ocformer.train(ocformer.load_npz(path), SMALL)
    ocformer.save_model(result.model, folder / "model")
    return SimpleNamespace(data=path, result=result, model_dir=folder / "model")


def test_predict_reproduces_reported_accuracy(classifier):
    """predict on the same data prints exactly the test accuracy of the report."""
    report = classifier.result.report

    figures = predict(classifier.model_dir, classifier.data)

    assert figures["n"] == report["n_test"]
    assert figures["accuracy"] == report["test_accuracy"]
    assert figures["loss"] == report["test_loss"]


def test_predict_reproduces_reported_regression_loss(tmp_path):
    """On sunspots, predict prints exactly the report's test loss."""
    result = ocformer.train(ocformer.load_dataset("sunspots"), SMALL)
    ocformer.save_model(result.model, tmp_path)

    figures = predict(tmp_path, "sunspots")

    assert figures["n"] == result.report["n_test"]
    assert figures["loss"] == result.report["test_loss"]
    assert "accuracy" not in figures


@pytest.mark.parametrize("given", ["directory", "parent", CONFIG_FILE, WEIGHTS_FILE])
def test_loaded_module_is_bit_equal(given, classifier):
    """load_model from any accepted path gives the in-memory module's outputs."""
    path = {
        "directory": classifier.model_dir,
        "parent": classifier.model_dir.parent,
    }.get(given, classifier.model_dir / given)
    tokens = torch.as_tensor(ocformer.load_npz(classifier.data).tokens)

    loaded = ocformer.load_model(path)

    with torch.no_grad():
        assert torch.equal(loaded(tokens), classifier.result.module()(tokens))


def test_module_layer_matches_layer_step(classifier):
    """A module layer moves tokens as dynamics.layer_step does with its weights."""
    model = classifier.result.module()
    generator = torch.Generator().manual_seed(0)
    shape = (6, len(model.encodings), model.layers[0].value.in_features)
    tokens = project(
        torch.randn(shape, generator=generator, dtype=torch.float64),
        space="ball",
        radius=1.0,
    )
    mask = torch.ones(shape[:2], dtype=torch.bool)
    mask[1, 2:] = False
    tokens = tokens.masked_fill(~mask[..., None], 0.0)

    with torch.no_grad():
        moved = model.layers[0](tokens, model.encodings, mask)
    expected = layer_step(
        tokens[None],
        mask,
        model.encodings,
        classifier.result.plan.weights[0],
        step=SMALL.step,
        space="ball",
        radius=1.0,
    )[0]

    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-12)


def test_padding_values_do_not_reach_outputs(classifier):
    """Whatever padded tokens hold, NaN included, the outputs do not change."""
    model = classifier.result.module()
    tokens = torch.as_tensor(ocformer.load_npz(classifier.data).tokens[:5])
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    mask[:, -1] = False
    filled = tokens.clone()
    filled[:, -1] = torch.nan

    with torch.no_grad():
        outputs = model(filled, mask)

    assert torch.equal(outputs, model(tokens.masked_fill(~mask[..., None], 0), mask))


def test_module_rejects_tokens_of_another_shape(classifier):
    """Tokens shaped unlike the training tokens raise a DataError naming both."""
    with pytest.raises(DataError, match=re.escape("got shape (2, 3, 5)")):
        classifier.result.module()(torch.zeros(2, 3, 5))


def test_same_seed_gives_identical_files(tmp_path):
    """Two CLI runs with one seed write the same report (but time) and weights."""
    out = tmp_path / "run"
    args = ["train", "--data", "order", "--n-sequences", "120", "--codes", "4"]
    runs = []
    for _ in range(2):
        result = runner.invoke(app, [*args, "--layers", "1", "--out", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        del report["wall_seconds"]
        runs.append((report, (out / "model" / WEIGHTS_FILE).read_bytes()))

    assert runs[0] == runs[1]


def test_failed_save_keeps_previous_model(classifier, tmp_path, monkeypatch):
    """A save that fails midway leaves the previous files whole and no stray file."""
    ocformer.save_model(classifier.result.model, tmp_path)
    before = snapshot(tmp_path)

    def half_write(tensors, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("ocformer.model.save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        ocformer.save_model(classifier.result.model, tmp_path)

    assert snapshot(tmp_path) == before


def test_cli_write_failure_keeps_previous_output(tmp_path, monkeypatch):
    """train whose output cannot be written exits 2 and keeps the old --out files."""
    out = tmp_path / "run"
    args = ["train", "--data", "order", "--n-sequences", "120", "--codes", "4"]
    args += ["--layers", "1", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = snapshot(out)

    def failing_save(tensors, path):
        raise OSError("read-only file system")

    monkeypatch.setattr("ocformer.model.save_file", failing_save)
    result = runner.invoke(app, [*args, "--seed", "1"])

    assert result.exit_code == 2
    assert re.fullmatch(
        r"error: cannot write to `--out` '.*run': read-only file system; pass a "
        r"writable directory.\n",
        result.stderr,
    )
    assert snapshot(out) == before


def test_align_dataset_renumbers_a_subset_of_classes(classifier):
    """Data holding some of the model's classes get the model's class indices."""
    model = classifier.result.module()
    stand_in = SimpleNamespace(
        encodings=model.encodings,
        token_dim=model.token_dim,
        config={"task": "classification", "classes": [10, 20, 30]},
    )
    data = Dataset(
        name="part",
        tokens=np.zeros((4, len(model.encodings), model.token_dim)),
        targets=np.array([0, 1, 1, 0]),
        mask=np.ones((4, len(model.encodings)), dtype=bool),
        task="classification",
        classes=(20, 30),
    )

    aligned = align_dataset(stand_in, data)

    assert aligned.classes == (10, 20, 30)
    assert aligned.targets.tolist() == [1, 2, 2, 1]


def test_align_dataset_rejects_another_task(classifier):
    """A regression dataset cannot be scored by a classifier."""
    model = classifier.result.module()
    n_tokens = len(model.encodings)
    data = Dataset(
        name="values",
        tokens=np.zeros((3, n_tokens, model.token_dim)),
        targets=np.array([0.5, 1.5, 2.5]),
        mask=np.ones((3, n_tokens), dtype=bool),
        task="regression",
    )

    with pytest.raises(DataError, match="trained for classification, got a regression"):
        align_dataset(model, data)


def test_weights_from_another_run_are_refused(tmp_path):
    """A model.json refuses a model.safetensors it was not saved with."""
    data = ocformer.load_dataset("order", n_sequences=60)
    config = ocformer.TrainConfig(
        n_layers=1, quantizer=ocformer.QuantizerConfig(codes=4)
    )
    first, second = tmp_path / "first", tmp_path / "second"
    ocformer.save_model(ocformer.train(data, config).module(), first)
    other = ocformer.TrainConfig(
        n_layers=1, seed=1, quantizer=ocformer.QuantizerConfig(codes=4)
    )
    ocformer.save_model(ocformer.train(data, other).module(), second)
    shutil.copy(second / "model.safetensors", first / "model.safetensors")
    with pytest.raises(DataError, match="is not the weights file that"):
        ocformer.load_model(first)
