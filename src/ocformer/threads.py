"""One thread for torch, BLAS and OpenMP, for the duration of a block.

The comparisons and checks solve many small problems whose tensor operations take
microseconds; on a machine whose cores are busy, threads spinning while they wait for
each other made them tens of times slower. One thread also makes every figure the
same bits whatever the number of cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch, BLAS and OpenMP on one thread, and restore them afterwards."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
