"""Full-space dynamic programming: the closed-loop policy of every quantized measure.

DESIGN.md section 4: for a tiny configuration, every quantized measure is enumerated
and the Bellman recursion runs over all of them,

    V_T(Lambda) = C_T(Lambda),
    V_t(Lambda) = min_a  c(a) + V_{t+1}(Phi_q(Lambda, a)),   ties to the lowest a,

with ``Phi_q`` the quantized move and ``C_T`` the terminal cost of
``mdp.QuantizedProblem``. The argmin at every (layer, measure) is the closed-loop
policy. Rolled forward from one training measure it gives an open-loop plan, the plan
``solver.solve_dp`` finds from that measure alone, at the same value to the bit
(section 5, claim 2). A new dataset quantized the same way (the stored embedding,
codebook, actions and N) is then trained by looking its plan up.

The space (``measure_space.MeasureSpace``): multisets of N sequence types, a type
being a code sequence of the n tokens (K codewords) with a class, so
``binom(S + N - 1, N)`` measures for ``S = K^n C`` types. Sequences move independently
under the shared action, so a measure moves by relabelling its multiset with each
type's successor, computed once for every type and action through the problem's own
move-and-encode path (the bits the forward DP computes).

Public API (names stable):

- ``solve_space(problem) -> PolicyTable``: full-space DP of a classification problem.
- ``PolicyTable.rollout(measure) -> Rollout(plan, value)``: follow the table from a
  quantized measure of N atoms on the 1/N lattice (e.g. ``problem.initial``).
- ``PolicyTable.lookup(problem) -> Solution``: the same as a solver's result.
- ``PolicyTable.measure(index) -> Measure`` and ``PolicyTable.problem_for(measure)
  -> QuantizedProblem``: a measure of the space, and the MDP started from it (what
  ``solver.solve_dp`` must agree with).
- ``build_policy_table(dataset, config) -> PolicyTable``: quantize a dataset as
  ``train`` does and solve its whole space, keeping embedding and configuration.
- ``save_policy_table(table, path)`` and ``load_policy_table(path) -> PolicyTable``.

Usage (``ocformer policy-table`` and ``ocformer train --policy-table`` on the
command line)::

    table = build_policy_table(load_dataset("order", n_sequences=200), config)
    save_policy_table(table, "runs/order.table")
    result = train(load_dataset("order", seed=7), policy_table=table)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import xxhash
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ocformer.actions import ActionSet
from ocformer.atomic import write_atomic
from ocformer.config import ExecutionConfig, TrainConfig
from ocformer.cost import check_cost
from ocformer.data import Dataset, split_dataset
from ocformer.dynamics import LayerWeights
from ocformer.embedding import Embedding
from ocformer.errors import ConfigError, DataError, OcformerError
from ocformer.mdp import EXPANSION_BUDGET, QuantizedProblem
from ocformer.measure_space import MeasureSpace
from ocformer.quantize import Measure, StateCodebook, canonical_measure
from ocformer.solver import Solution
from ocformer.threads import one_thread
from ocformer.train import build_problem

logger = logging.getLogger(__name__)

FORMAT = "ocformer-policy-table"
VERSION = 1
# The one safetensors metadata entry: a JSON header with format, version and digest.
METADATA_KEY = "ocformer"
# Terminal costs take 0.4 to 0.9 ms each: a million measures take 7 to 15 minutes.
MAX_MEASURES = 1_000_000
# Measures whose successors are ranked at once in the backward pass.
CHUNK = 1 << 16
# Terminal costs between two progress reports.
PROGRESS_EVERY = 1024
# Options of a run that may differ from the table's: they split the data and seed
# the coreset, but do not change the quantized MDP.
FREE_OPTIONS = ("seed", "test_fraction", "embedding.seed")
# The numbers of a QuantizedProblem besides its arrays; the table stores them.
PROBLEM_FIELDS = (
    "n_layers",
    "step",
    "space",
    "radius",
    "cost",
    "n_classes",
    "ridge",
    "action_cost",
)


class Rollout(NamedTuple):
    """An open-loop plan read off a policy table.

    Attributes:
        plan: the action index of each layer.
        value: V_0 of the measure rolled out: the plan's cost in the quantized model.
    """

    plan: tuple[int, ...]
    value: float


@dataclass(frozen=True, eq=False)
class PolicyTable:
    """The closed-loop policy and the values of every measure of a space.

    Attributes:
        problem: the MDP solved; its ``initial`` is the measure the table was built
            from, of which only the atom count N defines the space.
        successors: int64 array of shape (types, actions), the type each type moves
            to under each action.
        policy: unsigned integer array of shape (n_layers, measures): the lowest
            optimal action of every measure at every layer.
        values: float64 array of shape (n_layers + 1, measures), V_t of every
            measure; the last row is C_T.
        embedding: the embedding that quantizes new data like the table's own, or
            None for a table solved from a bare problem.
        config: the training configuration the table was built with, or None.
        source: how to rebuild the dataset it was built from, or None.
    """

    problem: QuantizedProblem
    successors: np.ndarray
    policy: np.ndarray
    values: np.ndarray
    embedding: Embedding | None = None
    config: TrainConfig | None = None
    source: dict[str, Any] | None = None

    @cached_property
    def space(self) -> MeasureSpace:
        """The measure space the table covers."""
        return _space_of(self.problem)

    @property
    def n_layers(self) -> int:
        return self.problem.n_layers

    @property
    def codebook(self) -> StateCodebook:
        return self.problem.codebook

    @property
    def actions(self) -> ActionSet:
        return self.problem.actions

    @cached_property
    def digest(self) -> str:
        """Hex xxh3-128 of the table's arrays and metadata, as its file stores it."""
        return _digest(_tensors(self), _metadata(self))

    def rollout(self, measure: Measure) -> Rollout:
        """Follow the policy from ``measure`` at layer 0.

        Args:
            measure: a quantized measure of this space: codes of shape
                (atoms, n_tokens) from the table's codebook, class targets, and
                counts summing to N (e.g. ``problem.initial``).

        Returns:
            The plan and its value V_0(measure).

        Raises:
            DataError: if the measure is not in the table's space.
        """
        types = self.space.types(measure)
        index = int(self.space.rank(types))
        value = float(self.values[0, index])
        plan = []
        for layer in range(self.n_layers):
            action = int(self.policy[layer, index])
            plan.append(action)
            types = np.sort(self.successors[types, action])
            index = int(self.space.rank(types))
        return Rollout(tuple(plan), value)

    def lookup(self, problem: QuantizedProblem) -> Solution:
        """The plan and value of ``problem``, read off the table instead of solved.

        Raises:
            ConfigError: if ``problem`` is another MDP than the table's (another
                codebook, action set, horizon, step, cost...).
            DataError: if its training measure is not in the table's space.
        """
        self.check_problem(problem)
        plan, value = self.rollout(problem.initial)
        return Solution(
            method="table",
            plan=plan,
            value=value,
            states_per_layer=(1,) * (self.n_layers + 1),
            states_expanded=0,
            transitions=0,
            terminal_evaluations=0,
        )

    def problem_for(self, measure: Measure) -> QuantizedProblem:
        """The table's MDP started from ``measure`` (for ``solver.solve`` to check)."""
        self.space.types(measure)
        initial = canonical_measure(measure.codes, measure.targets, measure.counts)
        return dataclasses.replace(self.problem, initial=initial)

    def measure(self, index: int) -> Measure:
        """The canonical measure of index ``index`` of the space."""
        return self.space.measure(self.space.unrank(index))

    def check_dataset(self, dataset: Dataset) -> None:
        """Check that ``dataset`` can be quantized as the table's data were.

        Raises:
            DataError: naming the table's data, if ``dataset`` is a regression task,
                has padding, or has other token features or sequence lengths.
        """
        built_on = (self.source or {}).get("name", "its data")
        fix = f"use data shaped like {built_on!r}, or train without --policy-table."
        if dataset.task != "classification":
            raise DataError(
                f"the policy table (built on {built_on!r}) covers classification, "
                f"got the regression dataset {dataset.name!r}; {fix}"
            )
        if not dataset.mask.all():
            raise DataError(
                f"the policy table (built on {built_on!r}) covers sequences whose "
                f"tokens are all real, got padding in {dataset.name!r}; {fix}"
            )
        shape = (self.space.n_tokens, self.embedding.token_dim)
        if (dataset.n_tokens, dataset.token_dim) != shape:
            raise DataError(
                f"the policy table (built on {built_on!r}) covers sequences of "
                f"(tokens, features) = {shape}, got "
                f"{(dataset.n_tokens, dataset.token_dim)} in {dataset.name!r}; {fix}"
            )

    def check_problem(self, problem: QuantizedProblem) -> None:
        """Check that ``problem`` is the table's MDP; its training measure is not
        compared.

        Raises:
            DataError: if its sequences have another number of tokens, or it has
                another number of classes.
            ConfigError: naming the first other part (codebook, actions, step...).
        """
        mine, tokens = self.problem, problem.initial.codes.shape[1]
        if tokens != self.space.n_tokens:
            raise DataError(
                f"the policy table covers sequences of {self.space.n_tokens} tokens, "
                f"got {tokens}; use data whose sequences have {self.space.n_tokens} "
                "tokens."
            )
        if problem.n_classes != self.space.n_classes:
            raise DataError(
                f"the policy table covers {self.space.n_classes} classes, got "
                f"{problem.n_classes}; use data with the table's classes."
            )
        arrays = {
            "codebook": (mine.codebook.codewords, problem.codebook.codewords),
            "actions": (
                mine.actions.weights.flatten(),
                problem.actions.weights.flatten(),
            ),
            "encodings": (mine.encodings, problem.encodings),
        }
        for name, (own, given) in arrays.items():
            own, given = np.asarray(own), np.asarray(torch.as_tensor(given).cpu())
            if own.shape != given.shape or not np.array_equal(own, given):
                raise ConfigError(
                    f"the problem's `{name}` differs from the policy table's; "
                    "quantize the data with the table's embedding, codebook and "
                    "actions (ocformer train --policy-table FILE does)."
                )
        for name in PROBLEM_FIELDS:
            own, given = getattr(mine, name), getattr(problem, name)
            if own != given:
                raise ConfigError(
                    f"the problem's `{name}` must be the policy table's {own!r}, got "
                    f"{given!r}; build the problem with the table's configuration."
                )

    def train_config(
        self, config: TrainConfig | None, execution: ExecutionConfig
    ) -> TrainConfig:
        """The configuration of a run that takes its plan from this table.

        Args:
            config: the run's configuration, or None for the table's. It may differ
                from the table's in ``seed`` and ``test_fraction`` only.
            execution: the run's execution options; workers, Ray and checkpoints
                have nothing to do with a lookup.

        Raises:
            ConfigError: if the table holds no configuration, ``config`` changes
                an option that defines the MDP, or ``execution`` asks for solving.
        """
        if self.config is None:
            raise ConfigError(
                "this policy table holds no training configuration (it was solved "
                "from a bare problem); build it with build_policy_table or "
                "`ocformer policy-table` to train with it."
            )
        ignored = execution.uses_dp_only()
        if ignored:
            raise ConfigError(
                f"`{ignored[0]}` applies to solving, got a policy table, which looks "
                f"the plan up; drop {ignored[0]}."
            )
        if config is None:
            return self.config
        own, given = _flatten(self.config.to_dict()), _flatten(config.to_dict())
        for name, value in given.items():
            if name not in FREE_OPTIONS and value != own.get(name):
                raise ConfigError(
                    f"`{name}` must be the policy table's {own.get(name)!r}, got "
                    f"{value!r}; with a table only seed and test_fraction may change "
                    "(pass config=None to use the table's)."
                )
        return config

    def describe(self) -> dict[str, Any]:
        """The table's figures for a report."""
        space = self.space
        return {
            "digest": self.digest,
            "measures": space.size,
            "sequence_types": space.n_types,
            "codes": space.n_codes,
            "tokens": space.n_tokens,
            "classes": space.n_classes,
            "atoms": space.atoms,
        }


def solve_space(
    problem: QuantizedProblem,
    *,
    max_measures: int = MAX_MEASURES,
    progress: Callable[[int, int], None] | None = None,
) -> PolicyTable:
    """Backward induction over every quantized measure of the problem's space.

    The space is fixed by the problem's codebook (K codes), tokens (n), classes (C)
    and N, the total count of its training measure (``--atoms N``). Terminal costs
    are computed as ``QuantizedProblem.terminal_cost`` computes them, and the
    Bellman step is the one of ``solver.solve_dp`` (``running[a] + V_{t+1}``, argmin
    with ties to the lowest action), so ``rollout(problem.initial)`` gives the plan
    and the value ``solve_dp(problem)`` gives on the CPU, bit for bit.

    Args:
        problem: a classification MDP whose training measure has no padding.
        max_measures: refuse a larger space.
        progress: called as ``progress(done, total)`` while the terminal costs,
            most of the time, are computed.

    Returns:
        The table; its ``problem`` is ``problem``.

    Raises:
        ConfigError: for a regression problem, or a space of more than
            ``max_measures`` measures.
        DataError: if the training measure holds padding tokens.
    """
    space = _space_of(problem)
    if space.size > max_measures:
        raise ConfigError(
            f"the full space has {space.size:,} measures ({space.n_codes} codes ^ "
            f"{space.n_tokens} tokens x {space.n_classes} classes = "
            f"{space.n_types:,} sequence types, multisets of {space.atoms} atoms), "
            f"more than {max_measures:,}; use fewer codes (--codes), atoms (--atoms) "
            "or tokens."
        )
    logger.info(
        "full space: %d types, %d measures, %d layers",
        space.n_types,
        space.size,
        problem.n_layers,
    )
    measures = space.enumerate()  # (size, N)
    successors = type_successors(problem, space)  # (types, actions)

    horizon = problem.n_layers
    values = np.empty((horizon + 1, space.size), dtype=np.float64)
    action_dtype = np.min_scalar_type(max(problem.n_actions - 1, 0))
    policy = np.empty((horizon, space.size), dtype=action_dtype)
    values[horizon] = _terminal_costs(problem, space, measures, progress)

    running = problem.running_costs()
    for layer in reversed(range(horizon)):
        for start in range(0, space.size, CHUNK):
            block = measures[start : start + CHUNK]  # (chunk, N)
            moved = np.sort(successors[block].transpose(0, 2, 1), axis=-1)
            children = space.rank(moved)  # (chunk, actions)
            q_values = running[None, :] + values[layer + 1][children]
            best = q_values.argmin(axis=1)
            policy[layer, start : start + len(block)] = best
            values[layer, start : start + len(block)] = q_values[
                np.arange(len(block)), best
            ]
    return PolicyTable(problem, successors, policy, values)


def type_successors(problem: QuantizedProblem, space: MeasureSpace) -> np.ndarray:
    """The type each type moves to under each action, int64 of shape (types, actions).

    Every code sequence is moved and re-encoded once per action by
    ``QuantizedProblem.expand``, the forward DP's own path, whose result for one
    sequence does not depend on the others in the batch. The class rides along.
    The moves run on the CPU whatever ``problem.device`` says, so that a table is
    the same on every machine (a CUDA device may differ in the last bits).
    """
    sequences = space.sequences()  # (K^n, n)
    codes = sequences.astype(problem.codebook.code_dtype)
    ones = np.ones(len(codes), dtype=np.int64)
    every = canonical_measure(codes, np.zeros(len(codes), dtype=np.int64), ones)
    assert np.array_equal(every.codes, codes), "sequences are not in canonical order"
    mover = dataclasses.replace(problem, initial=every, device="cpu")

    powers = space.n_codes ** np.arange(space.n_tokens - 1, -1, -1)
    per_action = codes.size * problem.codebook.codewords.shape[1]
    group = max(1, EXPANSION_BUDGET // per_action)
    moved = np.empty((len(codes), problem.n_actions), dtype=np.int64)
    for first in range(0, problem.n_actions, group):
        actions = range(first, min(first + group, problem.n_actions))
        children = mover.expand(codes[None], actions)[0]  # (actions, K^n, n)
        moved[:, first : first + len(actions)] = (children.astype(np.int64) @ powers).T

    classes = np.arange(space.n_classes)
    by_type = moved[:, None, :] * space.n_classes + classes[None, :, None]
    return by_type.reshape(space.n_types, problem.n_actions)


def _terminal_costs(
    problem: QuantizedProblem,
    space: MeasureSpace,
    measures: np.ndarray,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    """C_T of every measure, float64 of shape (size,)."""
    type_codes, type_classes = space.type_codes()
    type_codes = type_codes.astype(problem.codebook.code_dtype)
    starts = np.ones(measures.shape, dtype=bool)
    starts[:, 1:] = measures[:, 1:] != measures[:, :-1]
    costs = np.empty(len(measures), dtype=np.float64)

    # Each cost is a handful of tiny tensor operations; with several threads on a
    # busy machine, the threads' spinning made them 30x slower. Their results do not
    # depend on the thread count (tests compare them with the forward DP's).
    with one_thread():
        for index, (types, start) in enumerate(zip(measures, starts, strict=True)):
            first = np.flatnonzero(start)
            counts = np.diff(first, append=space.atoms)
            distinct = types[first]
            # Types are in canonical order, so the distinct ones form the
            # canonical measure as it is.
            costs[index] = problem.canonical_cost(
                type_codes[distinct], type_classes[distinct], counts
            )
            if progress is not None and (index + 1) % PROGRESS_EVERY == 0:
                progress(index + 1, len(measures))
    return costs


def _space_of(problem: QuantizedProblem) -> MeasureSpace:
    """The measure space of a classification problem without padding."""
    if problem.n_classes is None:
        raise ConfigError(
            "a policy table needs class targets (a sequence type is a code sequence "
            "and a class), got a regression problem; use a classification dataset, "
            "or `ocformer train` without a table for regression."
        )
    if not problem.mask.all():
        raise DataError(
            "a policy table covers sequences whose tokens are all real, got padding "
            "in the training measure; use sequences of one length, or `ocformer "
            "train` without a table."
        )
    return MeasureSpace(
        n_codes=problem.codebook.size,
        n_tokens=problem.initial.codes.shape[1],
        n_classes=problem.n_classes,
        atoms=int(problem.initial.counts.sum()),
    )


def build_policy_table(
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    max_measures: int = MAX_MEASURES,
    progress: Callable[[int, int], None] | None = None,
) -> PolicyTable:
    """Quantize a dataset's training part as ``train`` does, and solve its space.

    The split, embedding, codebook, coreset of N = ``config.quantizer.atoms`` atoms
    and actions are those of ``train(dataset, config)``; the table keeps the
    embedding and the configuration, so that it can quantize new data the same way.

    Args:
        dataset: a classification dataset of unpadded sequences.
        config: the run's configuration; ``quantizer.atoms`` must be set.
        max_measures: refuse a larger space.
        progress: called as ``progress(done, total)`` during the terminal costs.

    Raises:
        ConfigError: if ``atoms`` is unset, the method is not dp, a measure radius
            is set, the task is regression or the space is too large.
    """
    config = config or TrainConfig()
    if config.quantizer.atoms is None:
        raise ConfigError(
            "`atoms` must be set for a policy table, got None; pass --atoms N (e.g. "
            "4): the table covers every measure of N atoms on the 1/N lattice."
        )
    if config.method != "dp":
        raise ConfigError(
            f"`method` must be dp for a policy table, got {config.method!r}; the "
            "table is solved by full-space DP, drop --method."
        )
    if config.quantizer.measure_radius != 0:
        raise ConfigError(
            f"`measure_radius` must be 0 for a policy table, got "
            f"{config.quantizer.measure_radius}; the table is exact over every "
            "measure, drop --measure-radius."
        )
    if dataset.task != "classification":
        raise ConfigError(
            f"a policy table needs class targets, got the regression dataset "
            f"'{dataset.name}'; use a classification dataset, or `ocformer train` "
            "without a table."
        )
    check_cost(config.cost, dataset.n_classes)

    split = split_dataset(dataset, test_fraction=config.test_fraction, seed=config.seed)
    setup = build_problem(split.train, config)
    table = solve_space(setup.problem, max_measures=max_measures, progress=progress)
    return dataclasses.replace(
        table, embedding=setup.embedding, config=config, source=dataset.source
    )


def save_policy_table(table: PolicyTable, path: str | Path) -> None:
    """Write a table to one safetensors file, atomically.

    The arrays (values, policy, type successors, codewords, action weights,
    encodings, the training measure, the embedding) are tensors; everything else
    is one JSON metadata entry with the format, its version and an xxh3-128 digest
    of the arrays and the metadata. The same table gives the same bytes.

    Raises:
        OSError: if the file cannot be written; an existing file is then unchanged.
    """
    tensors, metadata = _tensors(table), _metadata(table)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "xxh3_128": _digest(tensors, metadata),
        "table": metadata,
    }
    text = json.dumps(header, sort_keys=True)
    write_atomic(
        Path(path),
        lambda temporary: save_file(tensors, temporary, metadata={METADATA_KEY: text}),
    )


def load_policy_table(path: str | Path) -> PolicyTable:
    """Read a table written by ``save_policy_table``.

    Raises:
        DataError: if the file cannot be read, is not a policy table, has another
            format version, or its digest does not match its contents.
    """
    fix = "pass a file written by `ocformer policy-table --out FILE`"
    try:
        with safe_open(str(path), framework="np") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
            names = handle.keys()  # a safetensors handle is not iterable
            tensors = {name: np.array(handle.get_tensor(name)) for name in names}
    except (OSError, SafetensorError) as error:
        raise DataError(
            f"cannot read policy table {str(path)!r}: {error}; {fix}."
        ) from None
    try:
        header = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is not an ocformer policy table; {fix}.")
    if header.get("version") != VERSION:
        raise DataError(
            f"policy table {str(path)!r} has format version "
            f"{header.get('version')!r}, this ocformer reads version {VERSION}; build "
            "the table again with `ocformer policy-table`."
        )
    metadata = header.get("table")
    if _digest(tensors, metadata) != header.get("xxh3_128"):
        raise DataError(
            f"policy table {str(path)!r} is damaged: its contents do not match its "
            "digest; build the table again with `ocformer policy-table`."
        )
    try:
        return _from_file(tensors, metadata)
    except (KeyError, TypeError, OcformerError) as error:
        raise DataError(
            f"policy table {str(path)!r} cannot be rebuilt ({error}); build the table "
            "again with `ocformer policy-table`."
        ) from None


def _tensors(table: PolicyTable) -> dict[str, np.ndarray]:
    """Every array of a table by its file name, contiguous numpy arrays."""
    problem = table.problem
    tensors = {
        "values": table.values,
        "policy": table.policy,
        "successors": table.successors,
        "codebook.codewords": problem.codebook.codewords,
        "encodings": problem.encodings.cpu().numpy(),
        "initial.codes": problem.initial.codes,
        "initial.targets": problem.initial.targets,
        "initial.counts": problem.initial.counts,
        "actions.parameters": problem.actions.parameters,
    }
    for name, tensor in problem.actions.weights.to_tensors("actions.").items():
        tensors[name] = tensor.detach().cpu().numpy()
    if table.embedding is not None:
        tensors["embedding.mean"] = table.embedding.mean
        tensors["embedding.matrix"] = table.embedding.matrix
    return {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def _metadata(table: PolicyTable) -> dict[str, Any]:
    """Everything but the arrays, JSON-able."""
    problem, space, embedding = table.problem, table.space, table.embedding
    return {
        "space": {
            "codes": space.n_codes,
            "tokens": space.n_tokens,
            "classes": space.n_classes,
            "atoms": space.atoms,
            "sequence_types": space.n_types,
            "measures": space.size,
        },
        "problem": {name: getattr(problem, name) for name in PROBLEM_FIELDS},
        "codebook": {
            "radius": problem.codebook.radius,
            "data_radius": problem.codebook.data_radius,
            "kind": problem.codebook.kind,
        },
        "actions": {
            "parameter_names": list(problem.actions.parameter_names),
            "covering_radius": problem.actions.covering_radius,
            "family": problem.actions.family,
        },
        "embedding": None
        if embedding is None
        else {
            "scale": embedding.scale,
            "space": embedding.space,
            "radius": embedding.radius,
        },
        "config": None if table.config is None else table.config.to_dict(),
        "data": table.source,
    }


def _digest(tensors: dict[str, np.ndarray], metadata: Any) -> str:
    """Hex xxh3-128 of the metadata's canonical JSON and every array, by name."""
    hasher = xxhash.xxh3_128()
    hasher.update(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        hasher.update(f"{name}:{array.dtype.str}{array.shape}".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def _from_file(tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> PolicyTable:
    """Rebuild a table from the arrays and the metadata of its file."""
    codebook = StateCodebook(tensors["codebook.codewords"], **metadata["codebook"])
    weights = LayerWeights.from_tensors(
        {
            name: torch.from_numpy(array)
            for name, array in tensors.items()
            if name.startswith("actions.")
        },
        prefix="actions.",
    )
    names = metadata["actions"]
    actions = ActionSet(
        weights,
        tensors["actions.parameters"],
        tuple(names["parameter_names"]),
        names["covering_radius"],
        names["family"],
    )
    initial = canonical_measure(
        tensors["initial.codes"], tensors["initial.targets"], tensors["initial.counts"]
    )
    problem = QuantizedProblem(
        initial=initial,
        codebook=codebook,
        actions=actions,
        encodings=torch.from_numpy(tensors["encodings"]),
        **metadata["problem"],
    )
    embedding = None
    if metadata["embedding"] is not None:
        embedding = Embedding(
            mean=tensors["embedding.mean"],
            matrix=tensors["embedding.matrix"],
            **metadata["embedding"],
        )
    config = None
    if metadata["config"] is not None:
        config = TrainConfig.from_dict(metadata["config"], "the policy table")
    table = PolicyTable(
        problem,
        tensors["successors"],
        tensors["policy"],
        tensors["values"],
        embedding,
        config,
        metadata["data"],
    )

    space, horizon = table.space, problem.n_layers
    shapes = {
        "values": (horizon + 1, space.size),
        "policy": (horizon, space.size),
        "successors": (space.n_types, problem.n_actions),
    }
    for name, shape in shapes.items():
        if tensors[name].shape != shape:
            raise DataError(f"`{name}` has shape {tensors[name].shape}, not {shape}")
    return table


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as ``{"section.name": value}``."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict) and name != "grid":
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat
