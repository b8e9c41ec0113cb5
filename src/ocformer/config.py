"""Typed configuration of a training run.

One frozen dataclass per component; the command line and a TOML file fill the same
objects (``TrainConfig.from_dict(merge(read_toml(path), flags))``). A file reads::

    n_layers = 3
    cost = "error"

    [embedding]
    dim = 4

    [quantizer]
    codes = 16

    [actions]
    family = "grid"
    grid = { temperature = [1.0, 4.0], angle = [0.0, 1.5708] }
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocformer.cost import COST_KINDS
from ocformer.embedding import EmbeddingConfig
from ocformer.errors import ConfigError

FAMILIES = ("grid", "ternary", "codebook")
CODEBOOKS = ("kmeans", "uniform")


@dataclass(frozen=True, kw_only=True)
class ActionConfig:
    """The finite action set: which layer family, and how it is discretised.

    Attributes:
        family: ``"grid"`` (a grid over the five real layer parameters),
            ``"ternary"`` (chosen weight entries in {-scale, 0, scale}) or
            ``"codebook"`` (weight sets loaded from a safetensors file).
        grid: for ``"grid"``, values per parameter name; missing names keep the
            default grid.
        entries: for ``"ternary"``, entries such as ``"value[0,1]"``.
        scale: for ``"ternary"``, the magnitude s of a non-zero entry.
        path: for ``"codebook"``, the safetensors file.
    """

    family: Literal["grid", "ternary", "codebook"] = "grid"
    grid: dict[str, tuple[float, ...]] | None = None
    entries: tuple[str, ...] | None = None
    scale: float = 1.0
    path: str | None = None


@dataclass(frozen=True, kw_only=True)
class QuantizerConfig:
    """State and measure quantizers.

    Attributes:
        codebook: ``"kmeans"`` (fitted on embedded training tokens) or ``"uniform"``.
        codes: number of codewords for k-means; grid points per axis for uniform.
        atoms: reduce the training measure to at most this many atoms with weights
            on the 1/atoms lattice (a coreset); None keeps every sequence.
    """

    codebook: Literal["kmeans", "uniform"] = "kmeans"
    codes: int = 16
    atoms: int | None = None


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A complete training run.

    Attributes:
        n_layers: number of layers T (time steps), >= 0.
        method: ``"dp"`` (dynamic programming) or ``"brute"`` (every plan).
        cost: terminal loss, ``"mse"`` or ``"error"`` (0-1, classification only).
        step: step size h of the layer update, > 0.
        ridge: ridge penalty of the closed-form head, >= 0.
        action_cost: weight of the running cost on the squared action norm, >= 0.
        test_fraction: share of the data held out for testing, in (0, 1).
        seed: seed of the split, the embedding, the codebook and the coreset.
        embedding: the embedding into the token set X.
        quantizer: the state and measure quantizers.
        actions: the finite action set.
    """

    n_layers: int = 2
    method: Literal["dp", "brute"] = "dp"
    cost: Literal["mse", "error"] = "mse"
    step: float = 0.5
    ridge: float = 1e-3
    action_cost: float = 0.0
    test_fraction: float = 0.2
    seed: int = 0
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    actions: ActionConfig = field(default_factory=ActionConfig)

    def __post_init__(self) -> None:
        _at_least("n_layers", self.n_layers, 0, "use 0 for the readout alone")
        _at_least("codes", self.quantizer.codes, 2, "use at least two codewords")
        if self.quantizer.atoms is not None:
            _at_least("atoms", self.quantizer.atoms, 1, "or leave it unset")
        if self.method not in ("dp", "brute"):
            raise ConfigError(
                f"`method` must be dp or brute, got {self.method!r}; use dp "
                "(dynamic programming) or brute (every plan, the oracle)."
            )
        if self.cost not in COST_KINDS:
            raise ConfigError(
                f"`cost` must be mse or error, got {self.cost!r}; use mse (squared "
                "error) or error (0-1 error, classification only)."
            )
        if self.quantizer.codebook not in CODEBOOKS:
            raise ConfigError(
                f"`codebook` must be kmeans or uniform, got "
                f"{self.quantizer.codebook!r}."
            )
        if self.actions.family not in FAMILIES:
            raise ConfigError(
                f"`family` must be one of {', '.join(FAMILIES)}, got "
                f"{self.actions.family!r}."
            )
        if self.actions.family == "codebook" and not self.actions.path:
            raise ConfigError(
                "the codebook family needs a weights file; pass --codebook-file PATH."
            )
        if not self.step > 0:
            raise ConfigError(f"`step` must be > 0, got {self.step}.")
        if not self.ridge >= 0 or not self.action_cost >= 0:
            raise ConfigError(
                f"`ridge` and `action_cost` must be >= 0, got {self.ridge} and "
                f"{self.action_cost}."
            )
        if not 0 < self.test_fraction < 1:
            raise ConfigError(
                f"`test_fraction` must be in (0, 1), got {self.test_fraction}; "
                "0.2 holds out a fifth of the data."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary, for reports."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "options") -> TrainConfig:
        """Build from a nested dictionary whose sections are ``embedding``,
        ``quantizer`` and ``actions``; ``source`` names it in error messages."""
        sections = {
            "embedding": EmbeddingConfig,
            "quantizer": QuantizerConfig,
            "actions": ActionConfig,
        }
        built = dict(values)
        for name, kind in sections.items():
            if isinstance(built.get(name), dict):
                built[name] = _build(kind, built[name], source)
        return _build(cls, built, source)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The nested dictionary of a TOML config file."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"cannot read config file {str(path)!r}: {error}; pass a readable "
            "TOML file."
        ) from None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the non-None values of ``overrides``, one level of nesting deep."""
    merged = dict(base)
    for name, value in overrides.items():
        if isinstance(value, dict):
            merged[name] = merge(merged.get(name) or {}, value)
        elif value is not None:
            merged[name] = value
    return merged


def _build(kind: type, values: dict[str, Any], source: str | Path) -> Any:
    """Instantiate a config dataclass, naming unknown keys in the error."""
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {str(source)!r}; known keys of "
            f"{kind.__name__} are {', '.join(sorted(known))}."
        )
    if kind is ActionConfig:
        values = dict(values)
        if values.get("grid") is not None:
            values["grid"] = {k: tuple(v) for k, v in values["grid"].items()}
        if values.get("entries") is not None:
            values["entries"] = tuple(values["entries"])
    return kind(**values)


def _at_least(name: str, value: int, minimum: int, fix: str) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value}; {fix}.")
