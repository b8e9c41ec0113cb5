"""Full-space DP: the policy table against the forward DP and brute force, its file,
training by lookup and the policy-table command."""

import dataclasses
import doctest
import itertools
import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from ocformer import measure_space
from ocformer.cli import app
from ocformer.config import ExecutionConfig, TrainConfig
from ocformer.data import load_dataset, order, split_dataset
from ocformer.errors import ConfigError, DataError
from ocformer.measure_space import MeasureSpace
from ocformer.policy import (
    build_policy_table,
    load_policy_table,
    save_policy_table,
    solve_space,
)
from ocformer.quantize import canonical_measure
from ocformer.solver import solve_brute, solve_dp
from ocformer.train import build_problem, train

# 9 actions (8 grid points and the identity) whose gains are large enough to move
# tokens across the two cells of a 1-d k-means codebook, so plans are not trivial.
GRID = {
    "temperature": (1.0,),
    "angle": (0.0,),
    "value_gain": (-3.0, 3.0),
    "mlp_gain": (-3.0, 3.0),
}
runner = CliRunner()


def table_config(**changes):
    """Order data in one dimension, 2 codes, 3 atoms, 2 layers: 5,984 measures."""
    options = {
        "n_layers": 2,
        "embedding": {"dim": 1},
        "quantizer": {"codes": 2, "atoms": 3},
        "actions": {"grid": GRID},
    }
    return TrainConfig.from_dict({**options, **changes})


def order_data(seed):
    """100 sequences of the order task (4 tokens), drawn with ``seed``."""
    return load_dataset("order", n_sequences=100, seed=seed)


def fixed_problem(table, dataset, config):
    """The quantized problem of a dataset's training part, quantized with the
    table's embedding, codebook and actions."""
    part = split_dataset(dataset, test_fraction=config.test_fraction, seed=config.seed)
    return build_problem(
        part.train,
        config,
        embedding=table.embedding,
        codebook=table.codebook,
        actions=table.actions,
    ).problem


@pytest.fixture(scope="module")
def table():
    """The table of the order task with seed 0."""
    return build_policy_table(order_data(0), table_config())


@pytest.fixture(scope="module")
def small_table():
    """A table of 2 atoms (528 measures), quick to build again."""
    config = table_config(quantizer={"codes": 2, "atoms": 2})
    return build_policy_table(order_data(0), config)


def test_measure_space_examples_run():
    """The doctests of ocformer.measure_space pass."""
    results = doctest.testmod(measure_space)
    assert results.attempted > 0 and results.failed == 0


def test_space_enumerates_every_multiset_once_in_rank_order():
    """enumerate() lists each multiset of types once; rank and unrank invert it."""
    space = MeasureSpace(n_codes=2, n_tokens=2, n_classes=2, atoms=3)
    measures = space.enumerate()
    expected = itertools.combinations_with_replacement(range(space.n_types), 3)

    assert sorted(map(tuple, measures.tolist())) == sorted(expected)
    assert space.size == len(measures) == 120
    assert np.array_equal(space.rank(measures), np.arange(space.size))
    for index in (0, 1, 57, 119):
        assert np.array_equal(space.unrank(index), measures[index])


def test_type_order_is_the_canonical_atom_order():
    """Measures built from increasing types are already canonical."""
    space = MeasureSpace(n_codes=3, n_tokens=2, n_classes=2, atoms=4)
    types = np.array([0, 5, 5, 17])
    measure = space.measure(types)
    codes, classes = space.type_codes()

    assert np.array_equal(measure.codes, codes[[0, 5, 17]])
    assert np.array_equal(measure.targets, classes[[0, 5, 17]])
    assert measure.counts.tolist() == [1, 2, 1]
    assert np.array_equal(space.types(measure), types)


def test_type_successors_are_the_problems_own_moves(table):
    """A state of three atoms moves, under every action, to their types'
    successors; the class rides along."""
    space = table.space
    problem = table.problem_for(space.measure(np.array([3, 21, 30])))
    initial = problem.initial
    types = (initial.codes.astype(np.int64) @ [8, 4, 2, 1]) * 2 + initial.targets
    children = problem.expand(initial.codes[None])[0]  # (actions, atoms, n_tokens)
    codes, classes = space.type_codes()

    for action, child in enumerate(children):
        moved = table.successors[types, action]
        assert np.array_equal(codes[moved], child)
        assert np.array_equal(classes[moved], initial.targets)


def test_terminal_values_are_the_problems_terminal_costs(table):
    """The last row of values is QuantizedProblem.terminal_cost, bit for bit."""
    rng = np.random.default_rng(0)
    for index in rng.choice(table.space.size, 25, replace=False):
        problem = table.problem_for(table.measure(int(index)))
        expected = problem.terminal_cost(problem.initial.codes)
        assert table.values[-1, index] == expected


def test_rollout_equals_forward_dp_from_every_sampled_measure(table):
    """From any measure of the space, the table's plan and value are the forward
    DP's, to the bit, and the value is the brute-force optimum."""
    rng = np.random.default_rng(1)
    indices = [0, table.space.size - 1, *rng.choice(table.space.size, 40)]
    moving = 0
    for index in indices:
        measure = table.measure(int(index))
        problem = table.problem_for(measure)
        solution = solve_dp(problem)

        assert table.rollout(measure) == (solution.plan, solution.value)
        moving += solution.plan != (0, 0)
    assert moving >= 10  # the plans are not all the identity

    brute = solve_brute(table.problem_for(table.measure(int(indices[2]))))
    assert table.rollout(table.measure(int(indices[2]))).value == brute.value


def test_lookup_on_other_datasets_equals_forward_dp(table):
    """Order data of other seeds, quantized with the stored embedding and codebook:
    the looked-up plan and value are those the forward DP finds from scratch."""
    config = table.config
    plans = set()
    for seed in range(1, 6):
        problem = fixed_problem(table, order_data(seed), config)
        solution = solve_dp(problem)
        looked_up = table.lookup(problem)

        assert (looked_up.plan, looked_up.value) == (solution.plan, solution.value)
        assert looked_up.method == "table"
        plans.add(solution.plan)
    assert len(plans) >= 2


def test_train_by_lookup_reports_the_forward_dp_plan(table):
    """train with the table gives the plan and value of the fixed problem's DP,
    and says where the plan came from."""
    dataset = order_data(7)
    config = dataclasses.replace(table.config, seed=3)
    result = train(dataset, config, policy_table=table)
    solution = solve_dp(fixed_problem(table, dataset, config))

    assert result.plan.actions == solution.plan
    assert result.report["quantized_value"] == solution.value
    assert result.report["method"] == "table"
    assert result.report["policy_table"]["digest"] == table.digest
    assert result.report["policy_table"]["measures"] == 5984
    assert result.report["counts"]["atoms"] <= 3
    assert len(result.model.layers) == 2


def test_train_with_a_table_refuses_another_configuration(table):
    """Options that define the MDP, and solver-only execution options, are refused."""
    with pytest.raises(ConfigError, match=r"`step` must be the policy table's 0.5"):
        train(
            order_data(1),
            dataclasses.replace(table.config, step=0.3),
            policy_table=table,
        )
    with pytest.raises(ConfigError, match=r"`--workers` applies to solving"):
        train(order_data(1), policy_table=table, execution=ExecutionConfig(workers=2))


def test_train_with_a_table_refuses_sequences_of_another_length(table):
    """The table covers sequences of 4 tokens: 5 are refused by name."""
    longer = order(n_sequences=100, n_tokens=5, seed=1)
    with pytest.raises(
        DataError, match=r"\(tokens, features\) = \(4, 1\), got \(5, 1\)"
    ):
        train(longer, policy_table=table)


def test_train_with_a_table_refuses_regression_and_padding_by_name(table):
    """Data the table cannot cover are refused, naming the table's own data."""
    data = order_data(1)
    regression = dataclasses.replace(
        data, task="regression", classes=None, targets=data.targets * 1.0
    )
    with pytest.raises(DataError, match=r"built on 'order'\) covers classification"):
        train(regression, policy_table=table)
    mask = data.mask.copy()
    mask[0, -1] = False
    padded = dataclasses.replace(data, mask=mask)
    with pytest.raises(DataError, match=r"got padding in 'order'"):
        train(padded, policy_table=table)


def test_lookup_refuses_a_problem_of_another_mdp(table):
    """A problem with another step or codebook is not the table's MDP."""
    other = dataclasses.replace(table.problem, step=0.25)
    with pytest.raises(ConfigError, match=r"`step` must be the policy table's 0.5"):
        table.lookup(other)
    codebook = dataclasses.replace(
        table.codebook, codewords=table.codebook.codewords + 0.01
    )
    with pytest.raises(ConfigError, match=r"`codebook` differs from the policy"):
        table.lookup(dataclasses.replace(table.problem, codebook=codebook))


def test_rollout_refuses_a_measure_outside_the_space(table):
    """Another atom count, padding codes or unknown classes are named."""
    initial = table.problem.initial
    heavier = canonical_measure(initial.codes, initial.targets, initial.counts * 2)
    with pytest.raises(DataError, match=r"counts must be positive and sum to N = 3"):
        table.rollout(heavier)
    padded = initial.codes.copy()
    padded[0, -1] = table.codebook.size
    with pytest.raises(DataError, match=r"codes must lie in \[0, 2\), got 2"):
        table.rollout(canonical_measure(padded, initial.targets, initial.counts))
    with pytest.raises(DataError, match=r"class indices in \[0, 2\)"):
        table.rollout(
            canonical_measure(initial.codes, initial.targets + 2, initial.counts)
        )


def test_zero_layers_is_the_terminal_cost(small_table):
    """With no layers the table holds C_T alone and the plan is empty."""
    problem = dataclasses.replace(small_table.problem, n_layers=0)
    table = solve_space(problem)
    assert table.policy.shape == (0, 528)
    assert table.rollout(problem.initial) == ((), solve_dp(problem).value)


def test_regression_is_refused():
    """A regression problem has no sequence types: the error names the fix."""
    with pytest.raises(ConfigError, match=r"needs class targets.*use a classification"):
        build_policy_table(load_dataset("sunspots"), table_config())


def test_too_large_a_space_is_refused(table):
    """The error gives the count and how to shrink the space."""
    with pytest.raises(
        ConfigError,
        match=r"the full space has 5,984 measures \(2 codes \^ 4 tokens x 2 classes "
        r"= 32 sequence types, multisets of 3 atoms\), more than 1,000; use fewer "
        r"codes \(--codes\), atoms \(--atoms\) or tokens",
    ):
        solve_space(table.problem, max_measures=1000)


def test_atoms_must_be_set():
    """Without --atoms the space would be the training set's size: refused."""
    config = TrainConfig.from_dict({"quantizer": {"codes": 2}})
    with pytest.raises(ConfigError, match=r"`atoms` must be set for a policy table"):
        build_policy_table(order_data(0), config)


def test_file_round_trip_keeps_every_figure(table, tmp_path):
    """A saved and loaded table rolls out, quantizes and configures as the original."""
    path = tmp_path / "order.table"
    save_policy_table(table, path)
    loaded = load_policy_table(path)

    assert loaded.digest == table.digest
    assert np.array_equal(loaded.values, table.values)
    assert np.array_equal(loaded.policy, table.policy)
    assert loaded.config == table.config and loaded.source == table.source
    assert np.array_equal(loaded.embedding.matrix, table.embedding.matrix)
    initial = table.problem.initial
    assert loaded.rollout(initial) == table.rollout(initial)
    problem = fixed_problem(loaded, order_data(2), loaded.config)
    assert loaded.lookup(problem) == table.lookup(problem)


def test_same_configuration_gives_the_same_file(small_table, tmp_path):
    """Building the same table again writes byte-identical files."""
    again = build_policy_table(order_data(0), small_table.config)
    save_policy_table(small_table, tmp_path / "first")
    save_policy_table(again, tmp_path / "second")
    assert (tmp_path / "first").read_bytes() == (tmp_path / "second").read_bytes()


def test_damaged_or_foreign_files_are_refused(small_table, tmp_path):
    """A changed byte, a truncated file, another safetensors file, another format
    version and a missing file each give a DataError that names the fix."""
    path = tmp_path / "good.table"
    save_policy_table(small_table, path)
    data = bytearray(path.read_bytes())

    flipped = tmp_path / "flipped.table"
    data[-5] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"is damaged: its contents do not match"):
        load_policy_table(flipped)

    truncated = tmp_path / "truncated.table"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"cannot read policy table .*; pass a file"):
        load_policy_table(truncated)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weights": np.zeros(3)}, str(foreign))
    with pytest.raises(DataError, match=r"is not an ocformer policy table"):
        load_policy_table(foreign)

    newer = tmp_path / "newer.table"
    header = json.loads(_metadata(path)["ocformer"])
    header["version"] = 99
    save_file(load_file(str(path)), str(newer), {"ocformer": json.dumps(header)})
    with pytest.raises(DataError, match=r"has format version 99, this ocformer reads"):
        load_policy_table(newer)

    with pytest.raises(DataError, match=r"cannot read policy table .*missing"):
        load_policy_table(tmp_path / "missing")


def _metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return handle.metadata()


def cli_args(out, *extra):
    return [
        "policy-table",
        "--data",
        "order",
        "--n-sequences",
        "100",
        "--dim",
        "1",
        "--codes",
        "2",
        "--atoms",
        "2",
        "--grid",
        "temperature=1",
        "--grid",
        "angle=0",
        "--grid",
        "value_gain=-3,3",
        "--grid",
        "mlp_gain=-3,3",
        "--out",
        str(out),
        *extra,
    ]


def test_command_builds_a_table_that_train_looks_up(small_table, tmp_path):
    """policy-table writes the table of the same run as Python; train
    --policy-table reads its plan and reports where it came from."""
    path = tmp_path / "tables" / "order.table"
    built = runner.invoke(app, cli_args(path, "--json"))
    assert built.exit_code == 0, built.output
    figures = json.loads(built.stdout)
    assert figures["measures"] == 528 and figures["digest"] == small_table.digest

    trained = runner.invoke(
        app, ["train", "--policy-table", str(path), "--seed", "4", "--json"]
    )
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)
    dataset = order_data(4)
    config = dataclasses.replace(small_table.config, seed=4)
    solution = solve_dp(fixed_problem(small_table, dataset, config))
    assert report["method"] == "table"
    assert report["policy_table"]["path"] == str(path)
    assert [p["action"] for p in report["plan"]] == list(solution.plan)
    assert report["quantized_value"] == solution.value


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--atoms", "500"], r"`atoms` must be between 1 and the number of training"),
        (["--data", "sunspots", "--n-sequences", "100"], r"needs class targets"),
        (["--codes", "1"], r"`codes` must be >= 2, got 1"),
        (
            ["--atoms", "20"],
            r"the full space has 77,535,155,627,160 measures .*; use fewer codes",
        ),
        (["--out", "{tmp}"], r"`--out` '.*' is a directory; pass a file path"),
    ],
)
def test_command_bad_input_writes_nothing(args, match, tmp_path):
    """Bad input exits 2 with one line on stderr and writes no table."""
    out = tmp_path / "new.table"
    extra = [arg.format(tmp=tmp_path) for arg in args]
    result = runner.invoke(app, cli_args(out, *extra))

    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert re.search(match, result.stderr), result.stderr
    assert not out.exists()


def test_train_with_a_table_refuses_bad_flags(small_table, tmp_path):
    """Flags the table fixes, and a file that is not a table, exit 2 in one line."""
    path = tmp_path / "order.table"
    save_policy_table(small_table, path)
    for args, match in [
        (["--layers", "3"], r"`--policy-table` fixes the run's options, got --layers"),
        (["--dry-run"], r"got --dry-run too; drop --dry-run or --policy-table"),
    ]:
        result = runner.invoke(app, ["train", "--policy-table", str(path), *args])
        assert result.exit_code == 2, result.output
        assert re.search(match, result.stderr), result.stderr

    other = tmp_path / "other.table"
    other.write_text("not a table")
    result = runner.invoke(app, ["train", "--policy-table", str(other)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "cannot read policy table" in result.stderr
