"""Parallel expansion: a local process pool gives the serial solution, bit for bit."""

import json

import pytest
from typer.testing import CliRunner

import ocformer.mdp
from ocformer.cli import app
from ocformer.config import ActionConfig, ExecutionConfig, QuantizerConfig, TrainConfig
from ocformer.errors import ConfigError
from ocformer.forward import serial_map
from ocformer.parallel import ProcessPoolMapper, in_order, open_mapper
from ocformer.solver import solve
from ocformer.train import check_execution
from tests.test_solver import random_problem


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of one or two states, so that a layer is many chunks."""
    monkeypatch.setattr(ocformer.mdp, "EXPANSION_BUDGET", 100)


def three_layer_problem():
    """Eight actions, three layers of 7, 43 and 206 states: many small chunks."""
    return random_problem(
        3,
        n_layers=3,
        levels=3,
        temperatures=(0.5, 3.0),
        angles=(0.0, 1.0),
        action_cost=0.01,
    )


def test_process_pool_equals_serial(small_chunks):
    """Two worker processes give the serial plan, value and counts exactly."""
    problem = three_layer_problem()
    assert problem.chunk_size(problem.n_actions) <= 2
    serial = solve(problem, "dp")
    with open_mapper(problem, workers=2) as mapper:
        assert isinstance(mapper, ProcessPoolMapper)
        pooled = solve(problem, "dp", mapper=mapper)
    assert pooled == serial
    assert pooled.states_per_layer == (1, 8, 44, 207)


def test_one_worker_is_serial():
    """`workers` 1 (or unset) expands in this process."""
    problem = three_layer_problem()
    for workers in (None, 1):
        with open_mapper(problem, workers=workers) as mapper:
            assert mapper is serial_map


def test_pool_refuses_another_problem():
    """A pool holds the problem it was started with and expands no other."""
    problem, other = three_layer_problem(), three_layer_problem()
    with (
        open_mapper(problem, workers=2) as mapper,
        pytest.raises(ValueError, match="opened for another problem"),
    ):
        mapper(other, [])


def test_in_order_keeps_chunk_order_and_window():
    """Results come in submission order, with at most `window` chunks in flight."""
    in_flight, most = [], 0

    def submit(chunk):
        nonlocal most
        in_flight.append(chunk)
        most = max(most, len(in_flight))
        return chunk

    def result(handle):
        in_flight.remove(handle)
        return handle * 10

    assert list(in_order(submit, result, range(7), window=3)) == [
        0,
        10,
        20,
        30,
        40,
        50,
        60,
    ]
    assert most == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"workers": 0}, "`workers` must be >= 1, got 0; use 1 for a serial run"),
        ({"backend": "spark"}, "`backend` must be local or ray, got 'spark'"),
        ({"address": "127.0.0.1:6379"}, "add --backend ray or drop --address"),
    ],
)
def test_execution_options_are_checked(options, match):
    """Bad execution options name the option, the value and the fix."""
    with pytest.raises(ConfigError, match=match):
        ExecutionConfig(**options)


def test_open_mapper_checks_its_arguments():
    """open_mapper rejects what ExecutionConfig rejects, for library callers."""
    problem = three_layer_problem()
    with (
        pytest.raises(ConfigError, match="`workers` must be an integer >= 1"),
        open_mapper(problem, workers=0),
    ):
        pass
    with (
        pytest.raises(ConfigError, match="`backend` must be local or ray"),
        open_mapper(problem, backend="dask"),
    ):
        pass


def test_dp_only_options_are_refused_with_brute_force():
    """Workers and checkpoints apply to the dp solver only."""
    brute = TrainConfig(method="brute")
    check_execution(brute, ExecutionConfig(workers=1))
    with pytest.raises(ConfigError, match="`--workers` applies to --method dp only"):
        check_execution(brute, ExecutionConfig(workers=2))
    with pytest.raises(ConfigError, match="`--checkpoint` applies to --method dp"):
        check_execution(brute, ExecutionConfig(checkpoint="somewhere"))


def test_config_file_execution_section_is_checked(tmp_path):
    """Execution options in a TOML file's [execution] section are checked as flags."""
    path = tmp_path / "run.toml"
    path.write_text("n_layers = 1\n\n[execution]\nworkers = 0\n")
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 2
    assert "`workers` must be >= 1, got 0; use 1 for a serial run." in result.stderr


def test_train_config_survives_the_checkpoint_json():
    """A resolved configuration read back from JSON is the same configuration."""
    config = TrainConfig(
        n_layers=3,
        seed=7,
        quantizer=QuantizerConfig(codes=5, atoms=40, measure_radius=0.01),
        actions=ActionConfig(family="ternary", entries=("value[0,1]",), scale=0.5),
    )
    grid = TrainConfig(actions=ActionConfig(grid={"temperature": (1.0, 4.0)}))
    for original in (config, grid):
        stored = json.loads(json.dumps(original.to_dict()))
        assert TrainConfig.from_dict(stored) == original
