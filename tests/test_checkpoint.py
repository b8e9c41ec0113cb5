"""Checkpoints: every layer saved atomically, a resume ends where a full run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ocformer.checkpoint import STATE_FILE, Checkpoint, layer_file, read_state
from ocformer.cli import app
from ocformer.errors import DataError
from ocformer.solver import solve
from tests.test_solver import random_problem

# Three layers that reach 5, 22 and 98 states: the first expands one state, the
# other two 27, so a kill after the first checkpointed layer lands mid-run.
KILLED = ["--data", "order", "--n-sequences", "120", "--codes", "4", "--layers", "3"]

runner = CliRunner()


def three_layer_problem(seed=3):
    """Three layers of a small MDP with four actions."""
    return random_problem(
        seed, n_layers=3, levels=3, temperatures=(1.0,), angles=(0.0, 1.0)
    )


def rewind(directory, layers):
    """Make ``directory`` look as if the run had been killed after ``layers``
    layers: the JSON lists only those (later layer files stay, unlisted)."""
    path = Path(directory) / STATE_FILE
    state = json.loads(path.read_text())
    state["layers"] = state["layers"][:layers]
    state["layers_done"] = layers
    state["complete"] = layers == state["n_layers"]
    state["states_per_layer"] = state["states_per_layer"][: layers + 1]
    path.write_text(json.dumps(state))


def test_checkpointed_solve_equals_plain_solve(tmp_path):
    """Saving every layer changes nothing in the solution; the files are as listed."""
    problem = three_layer_problem()
    plain = solve(problem, "dp")
    assert solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem)) == plain

    state = read_state(tmp_path)
    assert state["layers_done"] == 3 and state["complete"]
    assert state["states_per_layer"] == list(plain.states_per_layer)
    assert [entry["file"] for entry in state["layers"]] == [
        layer_file(t) for t in range(3)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [STATE_FILE, *(layer_file(t) for t in range(3))]
    )


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_resume_from_any_layer_gives_the_same_solution(tmp_path, layers):
    """A run resumed after any number of saved layers ends as a full run does."""
    problem = three_layer_problem()
    plain = solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem))
    rewind(tmp_path, layers)
    checkpoint = Checkpoint(tmp_path, problem)
    assert checkpoint.load().layer == layers
    assert solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem)) == plain
    assert read_state(tmp_path)["complete"]


def test_resume_with_a_measure_net_gives_the_same_solution(tmp_path):
    """With an epsilon-net (fresh each layer) a resumed run still ends the same."""
    problem = three_layer_problem()
    checkpoint = Checkpoint(tmp_path, problem, measure_radius=0.2)
    plain = solve(problem, "dp", measure_radius=0.2, checkpoint=checkpoint)
    assert plain.represented > 0
    rewind(tmp_path, 1)
    resumed = Checkpoint(tmp_path, problem, measure_radius=0.2)
    assert solve(problem, "dp", measure_radius=0.2, checkpoint=resumed) == plain


def test_layer_files_hold_tables_frontiers_and_values(tmp_path):
    """Tables are int64, frontiers keep the code dtype, the last layer its values."""
    from safetensors.numpy import load_file

    problem = three_layer_problem()
    solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem))
    first, last = (
        load_file(tmp_path / layer_file(0)),
        load_file(tmp_path / layer_file(2)),
    )
    assert first["table"].dtype == np.int64
    assert first["table"].shape == (1, problem.n_actions)
    assert first["frontier"].dtype == problem.initial.codes.dtype
    assert first["frontier"].shape[1:] == problem.initial.codes.shape
    assert set(last) == {"table", "terminal_values"}
    assert last["terminal_values"].dtype == np.float64


def test_checkpoint_of_another_problem_is_refused(tmp_path):
    """A checkpoint written for other data is refused, naming the fix."""
    problem = three_layer_problem()
    solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem))
    other = three_layer_problem(seed=4)
    with pytest.raises(DataError, match=r"belongs to another problem .* new --checkp"):
        solve(other, "dp", checkpoint=Checkpoint(tmp_path, other))
    with pytest.raises(DataError, match="belongs to another problem"):
        Checkpoint(tmp_path, problem, measure_radius=0.1).load()


def test_altered_layer_file_is_refused(tmp_path):
    """A layer file whose bytes changed since it was listed is reported damaged."""
    problem = three_layer_problem()
    solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem))
    path = tmp_path / layer_file(1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"is damaged: layer-001\.safetensors: its byt"):
        Checkpoint(tmp_path, problem).load()


def test_other_format_version_is_refused(tmp_path):
    """A checkpoint of another format version is refused, not misread."""
    problem = three_layer_problem()
    solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem))
    state = read_state(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({**state, "version": 99}))
    with pytest.raises(DataError, match="has format version 99, this ocformer reads"):
        Checkpoint(tmp_path, problem).load()


def test_stale_temporaries_are_removed_on_resume(tmp_path):
    """Temporaries that a killed write left behind are deleted when resuming."""
    problem = three_layer_problem()
    solve(problem, "dp", checkpoint=Checkpoint(tmp_path, problem))
    stale = tmp_path / ".layer-002.safetensors.0123456789ab.tmp"
    stale.write_bytes(b"partial")
    Checkpoint(tmp_path, problem).load()
    assert not stale.exists()


def report_without_wall_time(output):
    """The JSON report printed by ``train --json``, without ``wall_seconds``."""
    report = json.loads(output)
    report.pop("wall_seconds")
    return report


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """kill -9 after a checkpointed layer, then --resume DIR alone: the report is
    the uninterrupted run's (wall time aside)."""
    directory = tmp_path / "checkpoint"
    command = [str(Path(sys.executable).parent / "ocformer"), "train", *KILLED]
    process = subprocess.Popen(
        [*command, "--checkpoint", str(directory), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            state = read_state(directory) if directory.is_dir() else None
            if state is not None and state["layers_done"] >= 1:
                break
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = read_state(directory)
    assert 1 <= killed_at["layers_done"] < 3 and not killed_at["complete"]

    resumed = runner.invoke(app, ["train", "--resume", str(directory), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert read_state(directory)["complete"]
    uninterrupted = runner.invoke(app, ["train", *KILLED, "--json"])
    assert uninterrupted.exit_code == 0, uninterrupted.output
    assert report_without_wall_time(resumed.stdout) == report_without_wall_time(
        uninterrupted.stdout
    )


def test_resume_takes_no_problem_options(tmp_path):
    """--resume reads the run's options; a flag that would change them is refused."""
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--layers", "2"])
    assert result.exit_code == 2
    assert "takes the run's options from" in result.stderr
    assert "got --layers too; drop it" in result.stderr


def test_resume_without_checkpoint_is_refused(tmp_path):
    """--resume of a directory with no checkpoint says what to pass instead."""
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "found no checkpoint.json in" in result.stderr


def test_cli_refuses_a_checkpoint_of_another_run(tmp_path):
    """--checkpoint DIR of another configuration fails with one line, exit 2."""
    small = ["train", "--data", "order", "--n-sequences", "120", "--codes", "4"]
    first = runner.invoke(app, [*small, "--layers", "1", "--checkpoint", str(tmp_path)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        app, [*small, "--layers", "2", "--checkpoint", str(tmp_path)]
    )
    assert second.exit_code == 2
    assert second.stderr.count("\n") == 1
    assert "belongs to another problem" in second.stderr
