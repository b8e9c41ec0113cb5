"""Run the five checks and collect their results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from ocformer.plots import new_figure
from ocformer.threads import one_thread
from ocformer.verify import (
    closed_loop,
    consistency,
    continuity,
    optimality,
    quantization,
)
from ocformer.verify.claim import ClaimResult, Settings

logger = logging.getLogger(__name__)

# In DESIGN.md's order. Claim 3 runs last: it is the slowest.
CHECKS = {
    1: optimality,
    2: closed_loop,
    3: quantization,
    4: continuity,
    5: consistency,
}
ORDER = (1, 2, 4, 5, 3)
TITLES = {
    1: "DP is optimal",
    2: "Closed loop = open loop",
    3: "Quantized-optimal is near-optimal",
    4: "Value is continuous in the data",
    5: "Empirical consistency",
}
# The figure size of each claim's plot, in inches.
SIZES = {1: (10, 4.2), 2: (6.4, 5), 3: (10, 8), 4: (7.5, 5.2), 5: (11, 4.6)}


@dataclass(frozen=True)
class Verification:
    """The outcome of a run.

    Attributes:
        settings: the data, mode and seed.
        claims: one result per claim, in claim order.
        seconds: wall time of the whole run (not reproducible).
    """

    settings: Settings
    claims: tuple[ClaimResult, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether every claim held."""
        return all(claim.passed for claim in self.claims)

    @property
    def n_passed(self) -> int:
        return sum(claim.passed for claim in self.claims)

    def to_dict(self) -> dict[str, Any]:
        """The reproducible record: settings and claims, no wall times."""
        return {
            "data": self.settings.data,
            "mode": self.settings.mode,
            "seed": self.settings.seed,
            "passed": self.passed,
            "claims": [claim.to_dict() for claim in self.claims],
        }


def verify(
    settings: Settings | None = None,
    *,
    claims: tuple[int, ...] = (1, 2, 3, 4, 5),
    started: Callable[[int, str], None] | None = None,
) -> Verification:
    """Check the claims of DESIGN.md section 5 numerically.

    Args:
        settings: data, mode (quick or full) and seed; defaults when None.
        claims: the claim numbers to run (all five by default).
        started: called as ``started(number, title)`` before each check.

    Returns:
        The results, in claim order, and the wall time.

    Raises:
        ConfigError: on an unknown claim number.
    """
    from ocformer.errors import ConfigError

    settings = settings or Settings()
    unknown = sorted(set(claims) - set(CHECKS))
    if unknown:
        raise ConfigError(
            f"`claims` must be numbers 1 to 5, got {unknown[0]!r}; pick claims of "
            "DESIGN.md section 5."
        )
    began = time.perf_counter()
    results = {}
    with one_thread():
        for number in (n for n in ORDER if n in claims):
            if started is not None:
                started(number, TITLES[number])
            logger.info("claim %d: %s", number, TITLES[number])
            clock = time.perf_counter()
            result = CHECKS[number].check(settings)
            seconds = time.perf_counter() - clock
            results[number] = ClaimResult(**{**result.__dict__, "seconds": seconds})
    return Verification(
        settings=settings,
        claims=tuple(results[number] for number in sorted(results)),
        seconds=time.perf_counter() - began,
    )


def render(claim: ClaimResult) -> Figure:
    """The claim's plot as a matplotlib figure (drawn from its figures alone)."""
    width, height = SIZES[claim.number]
    figure = new_figure(width, height)
    CHECKS[claim.number].draw(claim, figure)
    verdict = "passed" if claim.passed else "FAILED"
    figure.suptitle(f"Claim {claim.number}: {claim.title} ({verdict})")
    return figure
