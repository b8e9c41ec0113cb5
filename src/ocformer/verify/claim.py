"""What every check of ``ocformer verify`` shares: its settings and its result.

A check runs one claim of DESIGN.md section 5 numerically and returns a
:class:`ClaimResult`: what it checked, its pass criterion in words, whether the
criterion held, and its figures. The figures are plain JSON (numbers, strings, lists,
dictionaries) and hold everything the claim's plot draws, so that the report and the
plot are two views of one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ocformer.data import BUILTIN
from ocformer.errors import ConfigError

# The datasets the checks are built for: a generator with fresh draws, and a fixed
# real dataset that is resampled.
DATASETS = ("order", "digits")
# Seeds of numpy's default_rng; larger ones are refused by some consumers (k-means).
MAX_SEED = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What a verification run was asked for.

    Attributes:
        data: the dataset of the claims that use one: ``"order"`` or ``"digits"``.
        quick: the small sizes (minutes on two cores) instead of the full ones.
        seed: the seed every random choice of the run derives from.
    """

    data: str = "order"
    quick: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            known = ", ".join(sorted(set(BUILTIN) - set(DATASETS)))
            raise ConfigError(
                f"`data` (--data) must be one of {', '.join(DATASETS)}, got "
                f"{self.data!r}; "
                f"the checks draw fresh sequences from these two ({known} and .npz "
                "files are not supported here)."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(
                f"`seed` (--seed) must be an integer, got {self.seed!r}; use e.g. 0."
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"`seed` (--seed) must be between 0 and {MAX_SEED}, got {self.seed}; "
                "use a smaller non-negative seed."
            )

    @property
    def mode(self) -> str:
        """``"quick"`` or ``"full"``."""
        return "quick" if self.quick else "full"

    def rng(self, claim: int) -> np.random.Generator:
        """The random generator of claim number ``claim``, seeded from the run's
        seed and the claim alone, so that one claim's draws do not depend on which
        other claims ran before it."""
        return np.random.default_rng([self.seed, claim])

    def seed_for(self, claim: int, *path: int) -> int:
        """A derived integer seed in [0, MAX_SEED] for a claim and a sub-index."""
        sequence = np.random.SeedSequence([self.seed, claim, *path])
        return int(sequence.generate_state(1, dtype=np.uint32)[0] & MAX_SEED)


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of one claim's check.

    Attributes:
        number: the claim's number in DESIGN.md section 5, 1 to 5.
        name: a short identifier, e.g. ``"dp_optimal"``.
        title: the claim in a few words.
        checked: what was computed, in one paragraph.
        criterion: the pass criterion in words, thresholds included.
        passed: whether the criterion held.
        figures: JSON-able numbers, including every series the plot draws.
        summary: the headline figures in one line, for the terminal and the report.
        notes: caveats a reader must see next to the figures (e.g. a rate that
            could not be fitted); empty when there are none.
        seconds: wall time of the check; not part of the reproducible record.
    """

    number: int
    name: str
    title: str
    checked: str
    criterion: str
    passed: bool
    figures: dict[str, Any]
    summary: str = ""
    notes: tuple[str, ...] = field(default=())
    seconds: float = 0.0

    @property
    def plot_file(self) -> str:
        """File name of the claim's PNG."""
        return f"claim{self.number}-{self.name.replace('_', '-')}.png"

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record (everything but the wall time)."""
        return {
            "number": self.number,
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "summary": self.summary,
            "checked": self.checked,
            "criterion": self.criterion,
            "figures": self.figures,
            "notes": list(self.notes),
            "plot": self.plot_file,
        }
