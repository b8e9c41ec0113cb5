"""``ocformer verify``: the five claims of DESIGN.md section 5, checked numerically.

    ocformer verify --quick --out runs/verify          # minutes on two cores
    ocformer verify --data digits --out runs/verify    # the full sizes

Each claim has its own module (``optimality``, ``closed_loop``, ``quantization``,
``continuity``, ``consistency``) with its sizes, its pass criterion stated before any
number is computed, the check itself and its plot. ``suite.verify`` runs them and
``report.write_outputs`` writes ``verify.json``, ``verify.md`` and one PNG per claim.

Example (from Python)::

    from ocformer.verify import Settings, verify, write_outputs
    result = verify(Settings(data="order", quick=True, seed=0))
    write_outputs(result, Path("runs/verify"))
"""

from ocformer.verify.claim import ClaimResult, Settings
from ocformer.verify.report import write_outputs
from ocformer.verify.suite import Verification, verify

__all__ = ["ClaimResult", "Settings", "Verification", "verify", "write_outputs"]
