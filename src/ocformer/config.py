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

    [execution]
    workers = 4

How a run executes (workers, backend, checkpoint) is an ``ExecutionConfig`` of its own:
it never changes the result, so it stays out of ``TrainConfig`` and its reports.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocformer.cost import check_cost_kind
from ocformer.embedding import EmbeddingConfig
from ocformer.errors import ConfigError
from ocformer.solver import check_method

FAMILIES = ("grid", "ternary", "codebook")
CODEBOOKS = ("kmeans", "uniform")
BACKENDS = ("local", "ray")


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
        identity: for ``"grid"``, add the identity layer as action 0.
    """

    family: Literal["grid", "ternary", "codebook"] = "grid"
    grid: dict[str, tuple[float, ...]] | None = None
    entries: tuple[str, ...] | None = None
    scale: float = 1.0
    path: str | None = None
    identity: bool = True


@dataclass(frozen=True, kw_only=True)
class QuantizerConfig:
    """State and measure quantizers.

    Attributes:
        codebook: ``"kmeans"`` (fitted on embedded training tokens) or ``"uniform"``.
        codes: number of codewords for k-means; grid points per axis for uniform.
        atoms: reduce the training measure to at most this many atoms with weights
            on the 1/atoms lattice (a coreset); None keeps every sequence.
        measure_radius: epsilon of the W1 net over the states of each layer: a new
            state within epsilon of a kept one is represented by it. 0 merges only
            identical measures.
    """

    codebook: Literal["kmeans", "uniform"] = "kmeans"
    codes: int = 16
    atoms: int | None = None
    measure_radius: float = 0.0


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
        _at_least("seed", self.seed, 0, "seeds are non-negative integers")
        _at_least("seed", self.embedding.seed, 0, "seeds are non-negative integers")
        radius = self.quantizer.measure_radius
        if not (isinstance(radius, int | float) and 0 <= radius < float("inf")):
            raise ConfigError(
                f"`measure_radius` must be a finite number >= 0, got {radius!r}; "
                "0 merges only identical measures."
            )
        if self.quantizer.atoms is not None:
            _at_least("atoms", self.quantizer.atoms, 1, "or leave it unset")
        check_method(self.method)
        check_cost_kind(self.cost)
        if self.quantizer.codebook not in CODEBOOKS:
            raise ConfigError(
                f"`codebook` must be kmeans or uniform, got "
                f"{self.quantizer.codebook!r}; use kmeans (fitted to the data) or "
                "uniform (a grid)."
            )
        if self.actions.family not in FAMILIES:
            raise ConfigError(
                f"`family` must be one of {', '.join(FAMILIES)}, got "
                f"{self.actions.family!r}; use grid unless you need another family."
            )
        if self.actions.family == "codebook" and not self.actions.path:
            raise ConfigError(
                "the codebook family needs a weights file; pass --codebook-file PATH."
            )
        # An option of another family would be silently ignored: say so instead.
        for option, flag, family in (
            ("grid", "--grid", "grid"),
            ("entries", "--entries", "ternary"),
            ("path", "--codebook-file", "codebook"),
        ):
            if getattr(self.actions, option) and self.actions.family != family:
                raise ConfigError(
                    f"`{option}` ({flag}) applies to the {family} family, got family "
                    f"{self.actions.family!r}; add --family {family} or drop {flag}."
                )
        if not (math.isfinite(self.step) and self.step > 0):
            raise ConfigError(
                f"`step` must be a finite number > 0, got {self.step}; use e.g. 0.5."
            )
        for name in ("ridge", "action_cost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"`{name}` must be a finite number >= 0, got {value}; use 0 to "
                    "switch it off."
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
        ``quantizer`` and ``actions``; ``source`` names it in error messages.

        Raises:
            ConfigError: on an unknown key, a value of the wrong type, or an option
                out of range.
        """
        sections = {
            "embedding": EmbeddingConfig,
            "quantizer": QuantizerConfig,
            "actions": ActionConfig,
        }
        built = dict(values)
        # The run's seed seeds the embedding too, unless the embedding names its own.
        embedding = built.get("embedding", {})
        if "seed" in built and isinstance(embedding, dict) and "seed" not in embedding:
            built["embedding"] = {**embedding, "seed": built["seed"]}
        for name, kind in sections.items():
            if isinstance(built.get(name), dict):
                built[name] = _build(kind, built[name], source)
        return _build(cls, built, source)


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    """How a run is executed: none of it changes the result, only where and how fast.

    Attributes:
        workers: processes that expand the DP's states in parallel. Local backend:
            worker processes, None or 1 expands in this process. Ray without an
            address: the CPUs of the local cluster, None for every core.
        backend: ``"local"`` (this machine) or ``"ray"`` (a Ray cluster).
        address: with ray, ``HOST:PORT`` of a running cluster to join; None starts
            a local cluster on the loopback interface for the run.
        checkpoint: directory where the DP saves every completed layer, and from
            which it resumes; None saves nothing.
        force: solve even when the estimated peak memory exceeds the memory
            available.
        device: where transitions are computed: ``"cpu"`` or a CUDA device
            (``"cuda"``, ``"cuda:1"``); results may differ from the CPU's in the last
            bits, and so may a plan where two costs nearly tie.
    """

    workers: int | None = None
    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    checkpoint: str | None = None
    force: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_device(self.device)
        if self.workers is not None:
            _at_least("workers", self.workers, 1, "use 1 for a serial run")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"`backend` must be local or ray, got {self.backend!r}; use local for "
                "this machine or ray for a Ray cluster."
            )
        if self.address is not None and self.backend != "ray":
            raise ConfigError(
                f"`address` joins a Ray cluster, got {self.address!r} with backend "
                f"{self.backend!r}; add --backend ray or drop --address."
            )

    def uses_dp_only(self) -> list[str]:
        """The options set here that only the dp solver honours."""
        options = []
        if self.workers is not None and self.workers > 1:
            options.append("--workers")
        if self.backend != "local":
            options.append("--backend ray")
        if self.checkpoint is not None:
            options.append("--checkpoint")
        return options

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], source: str = "options"
    ) -> ExecutionConfig:
        """Build from a flat dictionary; ``source`` names it in error messages.

        Raises:
            ConfigError: on an unknown key, a value of the wrong type, or an option
                out of range.
        """
        return _build(cls, values, source)


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
    """``base`` with the non-None values of ``overrides``; sections merge key by key.

    Raises:
        ConfigError: if ``overrides`` has a section where ``base`` has a plain value.
    """
    merged = dict(base)
    for name, value in overrides.items():
        if isinstance(value, dict):
            current = merged.get(name)
            if current is not None and not isinstance(current, dict):
                raise ConfigError(
                    f"`{name}` must be a table of options, got {current!r}; write "
                    f"its options under a [{name}] header."
                )
            merged[name] = merge(current or {}, value)
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
    hints = typing.get_type_hints(kind)
    checked = {
        name: _check_type(name, value, hints[name], source)
        for name, value in values.items()
    }
    return kind(**checked)


def _check_type(name: str, value: Any, hint: Any, source: str | Path) -> Any:
    """``value`` converted to the type ``hint`` of option ``name`` (TOML lists become
    tuples, integers floats), or a ConfigError naming the option and the bad value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)

    if dataclasses.is_dataclass(hint):
        ok, wanted = isinstance(value, hint), f"a [{name}] table of options"
    elif origin is Literal:
        ok, wanted = isinstance(value, str), "one of " + ", ".join(args)
    elif hint is bool or hint is str:
        ok, wanted = isinstance(value, hint), hint.__name__
    elif hint is int:
        ok, wanted = _is_int(value), "an integer"
    elif hint is float:
        ok, wanted = _is_number(value), "a number"
        value = float(value) if ok else value
    elif origin is tuple:  # tuple[str, ...]
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        wanted, value = "a list of strings", tuple(value) if ok else value
    elif origin is dict:  # dict[str, tuple[float, ...]]: the grid
        ok = isinstance(value, dict) and all(
            isinstance(v, list | tuple) and all(map(_is_number, v))
            for v in value.values()
        )
        wanted = "a table of number lists, e.g. { temperature = [1.0, 4.0] }"
        value = {k: tuple(map(float, v)) for k, v in value.items()} if ok else value
    else:  # an internal invariant: every option type is handled above
        raise TypeError(f"option {name!r} has an unchecked type {hint!r}")

    if not ok:
        raise ConfigError(
            f"`{name}` in {str(source)!r} must be {wanted}, got {value!r}; fix its "
            "value."
        )
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_device(device: str) -> None:
    """Reject a device torch cannot use here, naming the fix."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"`device` must be cpu or cuda (cuda:N), got {device!r}; use --device cpu."
        ) from None
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"`device` must be cpu or cuda (cuda:N), got {device!r}; use --device cpu."
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"`device` {device!r} asks for CUDA, but torch sees no CUDA device here; "
            "use --device cpu."
        )


def _at_least(name: str, value: int, minimum: int, fix: str) -> None:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value!r}; {fix}.")
    # numpy and scikit-learn take seeds below 2**32 only.
    if name == "seed" and value >= 2**32:
        raise ConfigError(f"`seed` must be < 2**32, got {value}; use a smaller seed.")
