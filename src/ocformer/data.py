"""Datasets: token sequences with one target each, built-in tasks and .npz files.

A dataset holds M sequences of n tokens with d_in raw features per token, a mask that
marks the real tokens (shorter sequences are padded), and one target per sequence. The
training measure of DESIGN.md section 2 puts one atom on each (sequence, target) pair.

Example:
    >>> dataset = order(n_sequences=64, n_tokens=5, token_dim=3)
    >>> dataset.tokens.shape, dataset.task, dataset.n_classes
    ((64, 5, 3), 'classification', 2)
    >>> split = split_dataset(dataset, test_fraction=0.25)
    >>> split.train.n_sequences, split.test.n_sequences
    (48, 16)
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ocformer.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
TASKS = ("classification", "regression")
BUILTIN = ("digits", "sunspots", "order")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Token sequences with one target each, validated on construction.

    Construction copies `tokens`, sets padded tokens (mask False) to 0.0 since their
    values are never used, and checks everything a solver relies on.

    Attributes:
        name: short name used in messages and reports.
        tokens: float64 array of shape (n_sequences, n_tokens, token_dim).
        targets: array of shape (n_sequences,): int64 class indices 0..n_classes-1 for
            classification, float64 values for regression.
        mask: bool array of shape (n_sequences, n_tokens); True marks a real token.
        task: "classification" or "regression".
        classes: original label of each class index (classification only). Inferred as
            0..max(targets) when omitted; kept by `subset`, so a part of a dataset may
            lack some classes.
        chronological: the sequences are in time order and must be split by order.
        source: the arguments of `load_dataset` that rebuild exactly these sequences
            (``name``, ``seed``, ``n_sequences``), or None for data built otherwise.
            A trained model keeps it, so that predictions can reproduce the split.

    Raises:
        DataError: shapes disagree, there is no sequence, a sequence has no real token,
            a real token or a target is NaN or infinite, or classification targets are
            not class indices of at least two classes.
    """

    name: str
    tokens: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    task: Task
    classes: tuple | None = None
    chronological: bool = False
    source: dict | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(
                f"`task` must be 'classification' or 'regression', got {self.task!r}; "
                "use integer class labels or float targets."
            )
        tokens = np.array(self.tokens, dtype=np.float64)  # a copy: padding is zeroed
        mask = np.asarray(self.mask, dtype=bool)
        targets = np.asarray(self.targets)
        where = f"dataset '{self.name}'"

        if tokens.ndim != 3:
            raise DataError(
                f"`tokens` of {where} must have shape (n_sequences, n_tokens, "
                f"token_dim), got shape {tokens.shape}; add the missing axes."
            )
        if tokens.shape[0] == 0:
            raise DataError(
                f"{where} must contain at least one sequence, got 0; "
                "check the data source."
            )
        if tokens.shape[1] == 0 or tokens.shape[2] == 0:
            raise DataError(
                f"`tokens` of {where} must have at least one token of at least one "
                f"feature, got shape {tokens.shape}; check the data source."
            )
        for key, array, shape in (
            ("mask", mask, tokens.shape[:2]),
            ("targets", targets, tokens.shape[:1]),
        ):
            if array.shape != shape:
                raise DataError(
                    f"`{key}` of {where} must have shape {shape}, got {array.shape}; "
                    "give one mask flag per token and one target per sequence."
                )

        n_empty = int(np.sum(~mask.any(axis=1)))
        if n_empty:
            raise DataError(
                f"every sequence of {where} must have a real token, got {n_empty} "
                "with an all-False mask; drop those sequences."
            )
        tokens[~mask] = 0.0
        n_bad = int(np.sum(~np.isfinite(tokens)))
        if n_bad:
            raise DataError(
                f"`tokens` of {where} must be finite, got {n_bad} NaN or infinite "
                "values; drop or impute them before loading."
            )

        if self.task == "classification":
            targets, classes = _class_targets(targets, self.classes, where)
        else:
            targets, classes = _regression_targets(targets, where), None
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "classes", classes)

    @property
    def n_sequences(self) -> int:
        """Number of sequences M."""
        return self.tokens.shape[0]

    @property
    def n_tokens(self) -> int:
        """Number of token slots n per sequence, padding included."""
        return self.tokens.shape[1]

    @property
    def token_dim(self) -> int:
        """Number of raw features d_in per token."""
        return self.tokens.shape[2]

    @property
    def n_classes(self) -> int:
        """Number of classes for classification, 0 for regression."""
        return 0 if self.classes is None else len(self.classes)

    def subset(self, index: np.ndarray) -> Dataset:
        """Return the sequences selected by `index`, keeping `classes`.

        Args:
            index: integer array of shape (k,) or bool array of shape (n_sequences,).

        Returns:
            A dataset of the selected sequences, in the order of `index`.
        """
        return Dataset(
            name=self.name,
            tokens=self.tokens[index],
            targets=self.targets[index],
            mask=self.mask[index],
            task=self.task,
            classes=self.classes,
            chronological=self.chronological,
        )


def _class_targets(
    targets: np.ndarray, classes: tuple | None, where: str
) -> tuple[np.ndarray, tuple]:
    """Check classification targets; return them as int64 with their class labels."""
    if targets.dtype != bool and not np.issubdtype(targets.dtype, np.integer):
        raise DataError(
            f"classification `targets` of {where} must be integer class indices, got "
            f"dtype {targets.dtype}; map labels to 0..n_classes-1 first."
        )
    targets = targets.astype(np.int64)
    # Without labels the targets must show two classes; with labels, a part of a
    # dataset (a test split) may lack some of them.
    n_classes = np.unique(targets).size if classes is None else len(classes)
    if n_classes < 2:
        raise DataError(
            f"classification {where} must have at least 2 classes, got {n_classes}; "
            "add sequences of another class or use a regression target."
        )
    if classes is None:
        classes = range(int(targets.max()) + 1)
    classes = tuple(classes)
    if targets.min() < 0 or targets.max() >= len(classes):
        raise DataError(
            f"classification `targets` of {where} must lie in 0..{len(classes) - 1}, "
            f"got {targets.min()}..{targets.max()}; map labels to class indices."
        )
    return targets, classes


def _regression_targets(targets: np.ndarray, where: str) -> np.ndarray:
    """Check regression targets; return them as float64."""
    if not np.issubdtype(targets.dtype, np.number) or np.iscomplexobj(targets):
        raise DataError(
            f"regression `targets` of {where} must be real numbers, got dtype "
            f"{targets.dtype}; convert them to float."
        )
    targets = targets.astype(np.float64)
    n_bad = int(np.sum(~np.isfinite(targets)))
    if n_bad:
        raise DataError(
            f"`targets` of {where} must be finite, got {n_bad} NaN or infinite "
            "values; drop those sequences."
        )
    return targets


@dataclass(frozen=True)
class Split:
    """A training part and a held-out test part of one dataset."""

    train: Dataset
    test: Dataset


def split_dataset(
    dataset: Dataset, *, test_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Split a dataset into training and test sequences.

    The test part has round(test_fraction * n_sequences) sequences: a seeded random
    choice, or the last ones for a chronological dataset (no future leaks into
    training). Both parts keep the original order of their sequences.

    Args:
        dataset: the dataset to split.
        test_fraction: share of sequences held out, strictly between 0 and 1.
        seed: seed of numpy's default_rng for the random choice.

    Returns:
        The split.

    Raises:
        ConfigError: `test_fraction` is not strictly between 0 and 1.
        DataError: a part would be empty, or a classification training part would
            hold fewer than 2 classes.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(
            f"`test_fraction` must be strictly between 0 and 1, got {test_fraction}; "
            "use e.g. 0.2 to hold out a fifth of the sequences."
        )
    n_total = dataset.n_sequences
    n_test = round(test_fraction * n_total)
    if n_test == 0 or n_test == n_total:
        raise DataError(
            f"`test_fraction` {test_fraction} of the {n_total} sequences of dataset "
            f"'{dataset.name}' must leave both parts non-empty, got {n_test} test "
            "sequences; change test_fraction or use more sequences."
        )

    if dataset.chronological:
        shuffled = np.arange(n_total)
    else:
        shuffled = np.random.default_rng(seed).permutation(n_total)
    train_index = np.sort(shuffled[: n_total - n_test])
    test_index = np.sort(shuffled[n_total - n_test :])

    train = dataset.subset(train_index)
    if dataset.task == "classification":
        present = np.unique(train.targets).size
        if present < 2:
            raise DataError(
                f"the training part of dataset '{dataset.name}' must hold at least 2 "
                f"classes, got {present}; change the seed or the test_fraction."
            )
    return Split(train=train, test=dataset.subset(test_index))


def digits(*, tokens: Literal["rows", "patches"] = "rows") -> Dataset:
    """The 1797 handwritten 8x8 digits bundled with scikit-learn, pixels / 16.

    Args:
        tokens: "rows" gives 8 tokens of the 8 pixels of each image row; "patches"
            gives 16 tokens of the 4 pixels of each 2x2 patch (patches and the pixels
            inside a patch in row-major order).

    Returns:
        A classification dataset with classes 0..9.

    Raises:
        ConfigError: `tokens` is neither "rows" nor "patches".
    """
    if tokens not in ("rows", "patches"):
        raise ConfigError(
            f"`tokens` must be 'rows' or 'patches', got {tokens!r}; pick one of them."
        )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64) / 16.0  # (1797, 8, 8), values in [0, 1]
    if tokens == "patches":
        blocks = images.reshape(-1, 4, 2, 4, 2)  # (M, patch row, row, patch col, col)
        images = blocks.transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)
    return Dataset(
        name="digits",
        tokens=images,
        targets=bunch.target.astype(np.int64),
        mask=np.ones(images.shape[:2], dtype=bool),
        task="classification",
        classes=tuple(range(10)),
    )


def sunspots(*, window: int = 8) -> Dataset:
    """Yearly sunspot activity (1700-2008, bundled with statsmodels) as windows.

    Sequence s covers the `window` years starting at year s + 1 (the first year has no
    previous one to difference with). Token t is (value_t, value_t - value_{t-1}) / 100
    and the target is the next year's value / 100.

    Args:
        window: number of years, hence tokens, per sequence.

    Returns:
        A chronological regression dataset with token_dim 2.

    Raises:
        ConfigError: `window` leaves fewer than 2 sequences or is below 1.
    """
    from statsmodels.datasets import sunspots as source

    values = source.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    n_windows = len(values) - window - 1
    if window < 1 or n_windows < 2:
        raise ConfigError(
            f"`window` must be between 1 and {len(values) - 3}, got {window}; "
            "use a shorter window."
        )

    features = np.stack([values[1:], np.diff(values)], axis=1) / 100.0  # (years-1, 2)
    starts = np.arange(n_windows)
    tokens = features[starts[:, None] + np.arange(window)]  # (n_windows, window, 2)
    return Dataset(
        name="sunspots",
        tokens=tokens,
        targets=values[starts + window + 1] / 100.0,
        mask=np.ones(tokens.shape[:2], dtype=bool),
        task="regression",
        chronological=True,
    )


def order(
    *, n_sequences: int = 512, n_tokens: int = 4, token_dim: int = 1, seed: int = 0
) -> Dataset:
    """A synthetic task that only a model aware of token order can solve.

    Tokens are standard normal. The label is 1 when the token with the largest
    first feature comes before the token with the smallest first feature, else 0;
    further features (``token_dim > 1``) are distractors. Any statistic that ignores
    positions, the mean-pooled readout of a model with no layers among them, sees a
    label independent of it.

    Args:
        n_sequences: number of sequences, at least 2.
        n_tokens: tokens per sequence, at least 2.
        token_dim: features per token, at least 1.
        seed: seed of numpy's default_rng.

    Returns:
        A classification dataset with classes (0, 1).

    Raises:
        ConfigError: a size is below its minimum.
        DataError: the draw holds only one class.
    """
    for option, value, least in (
        ("n_sequences", n_sequences, 2),
        ("n_tokens", n_tokens, 2),
        ("token_dim", token_dim, 1),
    ):
        if value < least:
            raise ConfigError(
                f"`{option}` must be >= {least}, got {value}; use a larger {option}."
            )
    rng = np.random.default_rng(seed)
    tokens = rng.standard_normal((n_sequences, n_tokens, token_dim))
    values = tokens[..., 0]  # (n_sequences, n_tokens)
    labels = (values.argmax(axis=1) < values.argmin(axis=1)).astype(np.int64)
    if np.unique(labels).size < 2:
        raise DataError(
            f"the order task with {n_sequences} sequences and seed {seed} must hold "
            "both classes, got one; use more sequences or another seed."
        )
    return Dataset(
        name="order",
        tokens=tokens,
        targets=labels,
        mask=np.ones(tokens.shape[:2], dtype=bool),
        task="classification",
        classes=(0, 1),
    )


def load_npz(path: str | Path) -> Dataset:
    """Load a dataset saved with numpy.savez.

    The archive holds `tokens` of shape (M, n, d_in), or (M, n) for one feature per
    token, `targets` of shape (M,), and optionally a bool `mask` of shape (M, n)
    (default: every token is real). Integer or bool targets make a classification
    dataset whose labels are remapped to 0..C-1 (`classes` keeps the originals);
    float targets make a regression dataset.

    Args:
        path: path of the .npz file; its stem becomes the dataset name.

    Returns:
        The dataset.

    Raises:
        DataError: the file is missing or not a readable .npz archive, an array is
            missing or has the wrong shape or dtype, or the data fail the checks of
            `Dataset`.
    """
    path = Path(path)
    arrays = _read_npz(path)
    fix = "save it with numpy.savez(path, tokens=..., targets=..., mask=...)"
    for key in ("tokens", "targets"):
        if key not in arrays:
            raise DataError(
                f"dataset file '{path}' must contain a `{key}` array, got only "
                f"{sorted(arrays)}; {fix}."
            )

    tokens = arrays["tokens"]
    if tokens.ndim == 2:
        tokens = tokens[:, :, None]  # (M, n, 1): one feature per token
    if tokens.ndim != 3 or not _is_real(tokens):
        raise DataError(
            f"`tokens` in '{path}' must be a real array of shape (M, n, d_in) or "
            f"(M, n), got shape {arrays['tokens'].shape} and dtype "
            f"{tokens.dtype}; {fix}."
        )
    shape = tokens.shape[:2]
    targets = arrays["targets"]
    if targets.shape != shape[:1] or not _is_real(targets):
        raise DataError(
            f"`targets` in '{path}' must be a real array of shape {shape[:1]}, got "
            f"shape {targets.shape} and dtype {targets.dtype}; {fix}."
        )
    mask = arrays.get("mask", np.ones(shape, dtype=bool))
    if mask.shape != shape or mask.dtype != bool:
        raise DataError(
            f"`mask` in '{path}' must be a bool array of shape {shape}, got shape "
            f"{mask.shape} and dtype {mask.dtype}; {fix}."
        )

    if targets.dtype == bool or np.issubdtype(targets.dtype, np.integer):
        labels, targets = np.unique(targets, return_inverse=True)
        task, classes = "classification", tuple(labels.tolist())
    else:
        task, classes = "regression", None
    logger.debug("loaded %s: %s tokens, task %s", path, tokens.shape, task)
    return Dataset(
        name=path.stem,
        tokens=tokens,
        targets=targets,
        mask=mask,
        task=task,
        classes=classes,
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz archive, turning every failure into a DataError."""
    if not path.is_file():
        raise DataError(
            f"dataset file '{path}' must exist, got no such file; check the path."
        )
    # Pickles stay off: a data file must never run code. Object arrays therefore fail
    # to load and are reported like any other unreadable archive.
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an archive")
        with archive:
            return {key: archive[key] for key in archive.files}
    except OSError as error:
        raise DataError(
            f"dataset file '{path}' must be readable, got {error}; check the file's "
            "permissions."
        ) from error
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"dataset file '{path}' must be an .npz archive of plain numeric arrays, "
            "got a file numpy cannot read as one; save it with numpy.savez."
        ) from error


def _is_real(array: np.ndarray) -> bool:
    """Whether an array holds bools, integers or real floats."""
    return array.dtype == bool or (
        np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)
    )


def same_source(name: str, source: dict | None) -> bool:
    """Whether ``load_dataset(name)`` names the dataset a recipe ``source`` rebuilds.

    Built-in names must be equal; file paths must resolve to the same file.
    """
    if not source:
        return False
    if name in BUILTIN or source["name"] in BUILTIN:
        return name == source["name"]
    return Path(name).resolve() == Path(source["name"]).resolve()


def load_dataset(
    name: str, *, seed: int = 0, n_sequences: int | None = None
) -> Dataset:
    """Load a built-in dataset by name, or an .npz file by path.

    Args:
        name: one of `BUILTIN` ("digits", "sunspots", "order") or a path ending in
            ".npz".
        seed: seed of the order task, and of the subset choice below.
        n_sequences: for "order", the number of sequences drawn (default 512); for
            the others, keep a seeded random subset of that many sequences, in their
            original order (default: all).

    Returns:
        The dataset.

    Raises:
        DataError: `name` is neither a built-in name nor an .npz path, or the file
            cannot be loaded.
        ConfigError: `n_sequences` is below 2 or above the number available.
    """
    if n_sequences is not None and n_sequences < 2:
        raise ConfigError(
            f"`n_sequences` must be >= 2, got {n_sequences}; "
            "a dataset needs at least two sequences."
        )
    if name == "order":
        dataset = order(
            n_sequences=512 if n_sequences is None else n_sequences, seed=seed
        )
        source = {"name": name, "seed": seed, "n_sequences": n_sequences}
        return dataclasses.replace(dataset, source=source)
    if name == "digits":
        dataset = digits()
    elif name == "sunspots":
        dataset = sunspots()
    elif str(name).lower().endswith(".npz"):
        dataset = load_npz(name)
    else:
        raise DataError(
            f"unknown dataset '{name}'; use one of {', '.join(BUILTIN)} or a path "
            "to an .npz file."
        )

    # A file is recorded by its absolute path, so that the recipe holds from any
    # working directory.
    recorded = name if name in BUILTIN else str(Path(name).resolve())
    source = {"name": recorded, "seed": seed, "n_sequences": n_sequences}
    if n_sequences is None:
        return dataclasses.replace(dataset, source=source)
    if n_sequences > dataset.n_sequences:
        raise ConfigError(
            f"`n_sequences` must be at most {dataset.n_sequences} for dataset "
            f"'{dataset.name}', got {n_sequences}; ask for fewer sequences."
        )
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(dataset.n_sequences, size=n_sequences, replace=False))
    return dataclasses.replace(dataset.subset(index), source=source)
