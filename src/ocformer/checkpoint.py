"""Checkpoints of the DP forward pass: save every completed layer, resume from the last.

A checkpoint directory holds one safetensors file per completed layer and one JSON file
that says which of them are complete:

- ``layer-TTT.safetensors``: ``table``, the layer's children table, int64 of shape
  (states, actions); then either ``frontier``, the codes of the next layer's states
  (uint8 or uint16, shape (states, atoms, n_tokens)), or, for the last layer,
  ``terminal_values``, float64 of shape (states,).
- ``checkpoint.json``: the format and its version, the digest of the problem, the
  layers done with each file's digest, the counts so far, the run's recipe (the
  resolved configuration and how to rebuild the dataset) and notes (execution
  options, output directory), so that ``ocformer train --resume DIR`` needs nothing
  else.

Every file is written to a temporary file and moved into place (``ocformer.atomic``),
and the JSON last: a process killed at any moment leaves the previous consistent
checkpoint or the new one, never a mix. A layer file that the JSON does not list yet
is simply written again on resume.

The problem digest (xxh3-128) covers every array and number that defines the MDP
(Lambda_0's codes, targets and counts, the codebook, the action weights, the
positional encodings, horizon, step, space, cost, ridge...), the measure net's
radius and the run's recipe; a checkpoint of another problem is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ocformer.atomic import write_atomic, write_text_atomic
from ocformer.errors import DataError
from ocformer.forward import Forward
from ocformer.mdp import QuantizedProblem

logger = logging.getLogger(__name__)

FORMAT = "ocformer-checkpoint"
VERSION = 1
STATE_FILE = "checkpoint.json"
# Temporaries that a killed write leaves behind (names from ocformer.atomic).
_STALE = re.compile(r"^\.(layer-\d+\.safetensors|checkpoint\.json)\.[0-9a-f]+\.tmp$")


def layer_file(layer: int) -> str:
    """Name of the file of layer ``layer`` (from 0)."""
    return f"layer-{layer:03d}.safetensors"


def problem_digest(
    problem: QuantizedProblem,
    *,
    measure_radius: float,
    recipe: dict[str, Any] | None = None,
) -> str:
    """Hex xxh3-128 digest of everything that defines the solve of ``problem``.

    Args:
        problem: the MDP; every field of it (arrays by dtype, shape and bytes).
        measure_radius: epsilon of the measure net.
        recipe: JSON-able description of the run (configuration, data recipe).
    """
    hasher = xxhash.xxh3_128()
    _feed(hasher, problem)
    _feed(hasher, float(measure_radius))
    hasher.update(json.dumps(recipe, sort_keys=True).encode())
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any) -> None:
    """Hash ``value`` by structure: dataclass fields, arrays, containers, scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hasher.update(type(value).__name__.encode())
        # Fields left out of equality (caches) are left out of the digest too.
        for field in dataclasses.fields(value):
            if not field.compare:
                continue
            hasher.update(field.name.encode())
            _feed(hasher, getattr(value, field.name))
    elif isinstance(value, torch.Tensor):
        _feed(hasher, value.detach().cpu().contiguous().numpy())
    elif isinstance(value, np.ndarray):
        hasher.update(f"{value.dtype.str}{value.shape}".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for key in sorted(value):
            _feed(hasher, key)
            _feed(hasher, value[key])
    elif isinstance(value, list | tuple):
        hasher.update(f"[{len(value)}".encode())
        for item in value:
            _feed(hasher, item)
    else:  # numbers, strings, bytes, None: repr is exact for floats
        hasher.update(repr(value).encode())


class Checkpoint:
    """Saves and restores the forward pass of one problem in a directory.

    Args:
        directory: where the files live; created on the first save.
        problem: the MDP being solved.
        measure_radius: epsilon of the measure net of the solve.
        recipe: JSON-able description of the run that rebuilds the problem
            (``TrainConfig.to_dict()``, the dataset's recipe), stored for a resume
            and hashed with the problem.
        notes: JSON-able facts that only help a resume (workers, output
            directory); stored, not hashed.
    """

    def __init__(
        self,
        directory: str | Path,
        problem: QuantizedProblem,
        *,
        measure_radius: float = 0.0,
        recipe: dict[str, Any] | None = None,
        notes: dict[str, Any] | None = None,
    ):
        self.directory = Path(directory)
        self.problem = problem
        self.recipe = recipe
        self.notes = notes
        self.digest = problem_digest(
            problem, measure_radius=measure_radius, recipe=recipe
        )
        self.layers: list[dict[str, Any]] = []

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> Forward | None:
        """The forward pass as far as it was saved, or None when nothing was.

        Raises:
            DataError: if the directory holds a checkpoint of another problem, of
                another format, or with a missing or altered layer file.
        """
        if self.directory.exists() and not self.directory.is_dir():
            raise DataError(
                f"`checkpoint` {str(self.directory)!r} is a file; pass a directory."
            )
        state = read_state(self.directory)
        if state is None:
            return None
        if state["problem"] != self.digest:
            raise DataError(
                f"checkpoint {str(self.directory)!r} belongs to another problem (its "
                f"digest {state['problem'][:12]} differs from this run's "
                f"{self.digest[:12]}); pass a new --checkpoint directory, or resume "
                f"that run with --resume {self.directory} alone."
            )
        self._remove_stale_temporaries()

        # Every file the JSON lists must be the one it describes.
        forward = Forward.start(self.problem)
        n_actions = self.problem.n_actions
        for entry in state["layers"]:
            tensors = self._read_layer(entry)
            table = tensors["table"]
            if table.shape != (forward.states_per_layer[-1], n_actions):
                raise self._damaged(entry["file"], f"table of shape {table.shape}")
            if "frontier" in tensors:
                frontier, values = tensors["frontier"], None
                count = len(frontier)
            else:
                frontier, values = forward.frontier[:0], tensors["terminal_values"]
                count = len(values)
            if count != entry["children"]:
                raise self._damaged(entry["file"], f"{count} states")
            forward.tables.append(table)
            forward.states_per_layer.append(count)
            forward.frontier, forward.terminal_values = frontier, values
        forward.represented = sum(entry["represented"] for entry in state["layers"])
        self.layers = list(state["layers"])
        logger.info("checkpoint %s: %d layers done", self.directory, forward.layer)
        return forward

    def save(self, forward: Forward) -> None:
        """Save the layer ``forward`` completed last, then the JSON that lists it.

        With no layer completed yet, only the JSON is written: the run can then be
        resumed by its directory alone from the start.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.layers = self.layers[: max(forward.layer - 1, 0)]
        if forward.layer:
            layer = forward.layer - 1
            tensors = {"table": np.ascontiguousarray(forward.tables[-1])}
            if forward.terminal_values is not None:
                tensors["terminal_values"] = np.asarray(
                    forward.terminal_values, dtype=np.float64
                )
            else:
                tensors["frontier"] = np.ascontiguousarray(forward.frontier)
            path = self.directory / layer_file(layer)
            write_atomic(path, lambda temporary: save_file(tensors, temporary))
            earlier = sum(entry["represented"] for entry in self.layers)
            self.layers.append(
                {
                    "layer": layer,
                    "file": path.name,
                    "xxh3_128": _file_digest(path),
                    "states": forward.states_per_layer[-2],
                    "children": forward.states_per_layer[-1],
                    "represented": forward.represented - earlier,
                }
            )

        state = {
            "format": FORMAT,
            "version": VERSION,
            "problem": self.digest,
            "n_layers": self.problem.n_layers,
            "layers_done": forward.layer,
            "complete": forward.layer == self.problem.n_layers,
            "states_per_layer": forward.states_per_layer,
            "represented": forward.represented,
            "layers": self.layers,
            "recipe": self.recipe,
            "notes": self.notes,
        }
        write_text_atomic(self.state_path, json.dumps(state, indent=1) + "\n")

    def _read_layer(self, entry: dict[str, Any]) -> dict[str, np.ndarray]:
        path = self.directory / entry["file"]
        if not path.is_file():
            raise self._damaged(entry["file"], "no such file")
        if _file_digest(path) != entry["xxh3_128"]:
            raise self._damaged(entry["file"], "its bytes changed since it was saved")
        try:
            return load_file(path)
        except (OSError, SafetensorError) as error:
            raise self._damaged(entry["file"], str(error)) from None

    def _damaged(self, name: str, what: str) -> DataError:
        return DataError(
            f"checkpoint {str(self.directory)!r} is damaged: {name}: {what}; pass a "
            "new --checkpoint directory to start over."
        )

    def _remove_stale_temporaries(self) -> None:
        for path in self.directory.iterdir():
            if _STALE.match(path.name):
                path.unlink(missing_ok=True)


def read_state(directory: str | Path) -> dict[str, Any] | None:
    """The parsed ``checkpoint.json`` of ``directory``, or None when there is none.

    Raises:
        DataError: if the file cannot be read or is not an ocformer checkpoint of
            this format version.
    """
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(
            f"cannot read checkpoint {str(path)!r}: {error}; pass the directory "
            "that --checkpoint wrote."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(
            f"{str(path)!r} is not an ocformer checkpoint; pass the directory that "
            "--checkpoint wrote."
        )
    if state.get("version") != VERSION:
        raise DataError(
            f"checkpoint {str(path)!r} has format version {state.get('version')!r}, "
            f"this ocformer reads version {VERSION}; finish it with the ocformer "
            "that wrote it, or start over in a new directory."
        )
    return state


def _file_digest(path: Path) -> str:
    """Hex xxh3-128 of a file's bytes, read in blocks."""
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()
