"""The Ray backend: a local cluster on loopback gives the serial solution, bit for bit.

ray is a dependency of ocformer: if it is missing, these tests fail rather than skip.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ocformer.mdp
from ocformer.cli import app
from ocformer.parallel import LOOPBACK, RayMapper, import_ray
from ocformer.solver import solve
from tests.test_parallel import three_layer_problem

# Imported here, at collection, so that a missing ray fails the run; import_ray keeps
# the local cluster on loopback and usage statistics off.
ray = import_ray(local=True)

SMALL = ["--data", "order", "--n-sequences", "120", "--codes", "4", "--layers", "2"]


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU Ray cluster started in this process, and a mapper on it."""
    problem = three_layer_problem()
    mapper = RayMapper(problem, workers=2)
    yield problem, mapper
    mapper.close()
    assert not ray.is_initialized()


def test_ray_equals_serial(cluster, monkeypatch):
    """Chunks expanded as Ray tasks give the serial plan, value and counts exactly."""
    problem, mapper = cluster
    monkeypatch.setattr(ocformer.mdp, "EXPANSION_BUDGET", 100)
    assert problem.chunk_size(problem.n_actions) <= 2
    assert solve(problem, "dp", mapper=mapper) == solve(problem, "dp")


def test_local_cluster_listens_on_loopback_only(cluster):
    """The cluster the backend starts has the loopback address, and no dashboard."""
    assert ray.util.get_node_ip_address() == LOOPBACK
    context = ray.get_runtime_context()
    assert context.gcs_address.startswith(f"{LOOPBACK}:")
    assert ray.cluster_resources()["CPU"] == 2


def test_cli_joins_a_cluster_by_address(cluster):
    """`--backend ray --address` from another process reports what a serial run
    reports (wall time aside)."""
    address = ray.get_runtime_context().gcs_address
    command = [str(Path(sys.executable).parent / "ocformer"), "train", *SMALL]
    joined = subprocess.run(
        [*command, "--backend", "ray", "--address", address, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert joined.returncode == 0, joined.stderr

    serial = CliRunner().invoke(app, ["train", *SMALL, "--json"])
    assert serial.exit_code == 0, serial.output
    expected, got = json.loads(serial.stdout), json.loads(joined.stdout)
    expected.pop("wall_seconds"), got.pop("wall_seconds")
    assert got == expected
