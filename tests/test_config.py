"""Tests of ocformer.config: validation, dictionaries, TOML files and merging."""

import math
import re

import pytest

from ocformer.config import (
    ActionConfig,
    QuantizerConfig,
    TrainConfig,
    merge,
    read_toml,
)
from ocformer.embedding import EmbeddingConfig
from ocformer.errors import ConfigError


def test_defaults_are_valid():
    """Every config builds from its defaults, and the run's defaults are documented."""
    config = TrainConfig()

    assert (config.n_layers, config.method, config.cost) == (2, "dp", "mse")
    assert config.quantizer == QuantizerConfig()
    assert config.actions == ActionConfig()
    assert config.embedding == EmbeddingConfig()


# Each case: TrainConfig options, and the pinned message.
INVALID = {
    "n_layers": (
        {"n_layers": -1},
        "`n_layers` must be >= 0, got -1; use 0 for the readout alone.",
    ),
    "codes": (
        {"quantizer": QuantizerConfig(codes=1)},
        "`codes` must be >= 2, got 1; use at least two codewords.",
    ),
    "atoms": (
        {"quantizer": QuantizerConfig(atoms=0)},
        "`atoms` must be >= 1, got 0; or leave it unset.",
    ),
    "seed": (
        {"seed": -1},
        "`seed` must be >= 0, got -1; seeds are non-negative integers.",
    ),
    "embedding_seed": (
        {"embedding": EmbeddingConfig(seed=-2)},
        "`seed` must be >= 0, got -2; seeds are non-negative integers.",
    ),
    "method": (
        {"method": "adam"},
        "`method` must be one of dp, brute, got 'adam'; use dp (dynamic programming) "
        "or brute (every plan, the oracle).",
    ),
    "cost": (
        {"cost": "hinge"},
        "`cost` must be one of mse, error, got 'hinge'; use mse (squared error) or "
        "error (0-1 error, classification only).",
    ),
    "codebook": (
        {"quantizer": QuantizerConfig(codebook="lloyd")},
        "`codebook` must be kmeans or uniform, got 'lloyd'; use kmeans",
    ),
    "family": (
        {"actions": ActionConfig(family="adam")},
        "`family` must be one of grid, ternary, codebook, got 'adam'; use grid",
    ),
    "codebook_path": (
        {"actions": ActionConfig(family="codebook")},
        "the codebook family needs a weights file; pass --codebook-file PATH.",
    ),
    "step_zero": (
        {"step": 0.0},
        "`step` must be a finite number > 0, got 0.0; use e.g. 0.5.",
    ),
    "step_inf": (
        {"step": math.inf},
        "`step` must be a finite number > 0, got inf; use e.g. 0.5.",
    ),
    "ridge": (
        {"ridge": -1.0},
        "`ridge` must be a finite number >= 0, got -1.0; use 0 to switch it off.",
    ),
    "action_cost": (
        {"action_cost": math.nan},
        "`action_cost` must be a finite number >= 0, got nan; use 0 to switch it off.",
    ),
    "test_fraction": (
        {"test_fraction": 1.0},
        "`test_fraction` must be in (0, 1), got 1.0; 0.2 holds out a fifth",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_option_is_rejected(case):
    """Each out-of-range option raises a ConfigError naming it and the fix."""
    options, message = INVALID[case]

    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**options)


def test_from_dict_builds_sections():
    """Nested dictionaries become the section dataclasses, lists become tuples."""
    config = TrainConfig.from_dict(
        {
            "n_layers": 3,
            "step": 1,
            "quantizer": {"codes": 8, "atoms": 20},
            "actions": {"family": "ternary", "entries": ["value[0,1]"]},
        }
    )
    gridded = TrainConfig.from_dict({"actions": {"grid": {"angle": [0, 1.5]}}})

    assert config.n_layers == 3
    assert config.step == 1.0 and isinstance(config.step, float)
    assert config.quantizer == QuantizerConfig(codes=8, atoms=20)
    assert config.actions.entries == ("value[0,1]",)
    assert gridded.actions.grid == {"angle": (0.0, 1.5)}


def test_round_trips_through_to_dict():
    """from_dict(to_dict()) rebuilds an equal config."""
    config = TrainConfig(
        n_layers=1,
        actions=ActionConfig(grid={"temperature": (1.0, 4.0)}),
        quantizer=QuantizerConfig(codebook="uniform", codes=3),
    )

    assert TrainConfig.from_dict(config.to_dict()) == config


def test_run_seed_seeds_the_embedding():
    """The run's seed is the embedding's unless the embedding names its own."""
    assert TrainConfig.from_dict({"seed": 4}).embedding.seed == 4
    own = TrainConfig.from_dict({"seed": 4, "embedding": {"seed": 7}})
    assert own.embedding.seed == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"bogus": 1},
            "unknown key 'bogus' in 'run.toml'; known keys of TrainConfig are "
            "action_cost, actions, cost",
        ),
        (
            {"quantizer": {"levels": 4}},
            "unknown key 'levels' in 'run.toml'; known keys of QuantizerConfig are "
            "atoms, codebook, codes, measure_radius.",
        ),
    ],
)
def test_from_dict_rejects_unknown_keys(values, message):
    """An unknown key raises a ConfigError naming it, the source and the known keys."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_dict(values, "run.toml")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n_layers": True}, "`n_layers` in 'run.toml' must be an integer, got True"),
        ({"n_layers": 1.5}, "`n_layers` in 'run.toml' must be an integer, got 1.5"),
        ({"step": "big"}, "`step` in 'run.toml' must be a number, got 'big'"),
        ({"method": 3}, "`method` in 'run.toml' must be one of dp, brute, got 3"),
        (
            {"quantizer": 3},
            "`quantizer` in 'run.toml' must be a [quantizer] table of options, got 3",
        ),
        (
            {"actions": {"grid": {"angle": 0.5}}},
            "`grid` in 'run.toml' must be a table of number lists",
        ),
        (
            {"actions": {"entries": "value[0,1]"}},
            "`entries` in 'run.toml' must be a list of strings, got 'value[0,1]'",
        ),
    ],
)
def test_from_dict_rejects_wrong_types(values, message):
    """A value of the wrong type raises a ConfigError naming option and value."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_dict(values, "run.toml")


def test_merge_keeps_base_where_overrides_are_none():
    """None means "not given": the base value stays; others replace it."""
    base = {"n_layers": 3, "cost": "error", "quantizer": {"codes": 8, "atoms": 5}}
    overrides = {"n_layers": None, "cost": "mse", "quantizer": {"codes": None}}

    merged = merge(base, overrides)

    assert merged == {
        "n_layers": 3,
        "cost": "mse",
        "quantizer": {"codes": 8, "atoms": 5},
    }


def test_merge_does_not_change_its_arguments():
    """merge returns a new dictionary and leaves base and overrides as they were."""
    base = {"quantizer": {"codes": 8}}
    overrides = {"quantizer": {"codes": 4}, "seed": 2}

    merge(base, overrides)

    assert base == {"quantizer": {"codes": 8}}
    assert overrides == {"quantizer": {"codes": 4}, "seed": 2}


def test_merge_rejects_a_value_where_a_section_belongs():
    """A plain value in place of a section raises a ConfigError saying so."""
    with pytest.raises(ConfigError, match=re.escape("under a [quantizer] header")):
        merge({"quantizer": 3}, {"quantizer": {"codes": None}})


def test_read_toml_reads_sections(tmp_path):
    """read_toml returns the nested dictionary that from_dict takes."""
    path = tmp_path / "run.toml"
    path.write_text(
        'n_layers = 3\ncost = "error"\n\n[quantizer]\ncodes = 16\n\n[actions]\n'
        "grid = { temperature = [1.0, 4.0] }\n"
    )

    values = read_toml(path)

    assert values == {
        "n_layers": 3,
        "cost": "error",
        "quantizer": {"codes": 16},
        "actions": {"grid": {"temperature": [1.0, 4.0]}},
    }
    assert TrainConfig.from_dict(values).actions.grid == {"temperature": (1.0, 4.0)}


@pytest.mark.parametrize("content", [None, "n_layers = = 3\n", b"\xff\xfe"])
def test_read_toml_rejects_unreadable_files(content, tmp_path):
    """A missing, malformed or undecodable file raises a ConfigError naming it."""
    path = tmp_path / "run.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)

    with pytest.raises(ConfigError, match=r"cannot read config file '.*run.toml': "):
        read_toml(path)


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (
            {"family": "grid", "entries": ("value[0,0]",)},
            "`entries` (--entries) applies to the ternary family, got family 'grid'",
        ),
        (
            {"family": "ternary", "grid": {"angle": (0.0,)}},
            "`grid` (--grid) applies to the grid family, got family 'ternary'",
        ),
        (
            {"family": "grid", "path": "book.safetensors"},
            "`path` (--codebook-file) applies to the codebook family",
        ),
    ],
)
def test_options_of_another_action_family_are_refused(actions, message):
    """An action option the chosen family would ignore is an error, not a no-op."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(actions=ActionConfig(**actions))
