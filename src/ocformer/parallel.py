"""Mappers that expand chunks of states in parallel: a local process pool, or Ray.

The forward pass of the DP (``forward.expand_layer``) cuts each frontier into chunks and
hands them to a *mapper*, which yields ``forward.expand_chunk(problem, chunk)`` for each
chunk, in chunk order. Deduplication and the epsilon-net stay in the driver and see
the children in the same order whatever runs the chunks, so every mapper gives the
same solution, bit for bit:

- ``serial_map``: one chunk after the other, in this process (``workers=1``).
- ``ProcessPoolMapper``: a pool of local worker processes; the problem goes to each
  worker once, when it starts.
- ``RayMapper``: remote tasks on a Ray cluster, joined by address or started locally
  on the loopback interface; the problem goes into the object store once.

Workers run torch on one thread each: N workers on N cores, rather than N workers each
starting a thread per core and fighting over them.

Pool workers are spawned, so a script that uses them must guard its entry point with
``if __name__ == "__main__":`` (each worker imports the script's main module); the
``ocformer`` command does.

    with open_mapper(problem, backend="local", workers=4) as mapper:
        solution = solve(problem, "dp", mapper=mapper)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ocformer.config import BACKENDS
from ocformer.errors import ConfigError
from ocformer.forward import Expansion, Mapper, expand_chunk, serial_map
from ocformer.mdp import QuantizedProblem

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Chunks in flight per worker: enough to keep every worker busy while the driver
# deduplicates, few enough that finished chunks do not pile up in memory.
IN_FLIGHT_PER_WORKER = 2


@contextmanager
def open_mapper(
    problem: QuantizedProblem,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
) -> Iterator[Mapper]:
    """A mapper for ``problem``, and everything it started stopped on exit.

    Args:
        problem: the MDP whose chunks the mapper expands.
        backend: ``"local"`` (this machine) or ``"ray"``.
        workers: local worker processes; 1 or None expands in this process. With
            Ray and no ``address``, the CPUs of the local cluster (None: every core).
        address: with Ray, the address of a running cluster to join (``HOST:PORT``);
            None starts a local cluster on the loopback interface for this run.

    Raises:
        ConfigError: on an unknown backend, a worker count below 1, an address
            without Ray, or a Ray cluster that cannot be started or joined.
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"`backend` must be local or ray, got {backend!r}; use local for this "
            "machine or ray for a Ray cluster."
        )
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(
            f"`workers` must be an integer >= 1, got {workers!r}; use 1 for a serial "
            "run."
        )
    if address is not None and backend != "ray":
        raise ConfigError(
            f"`address` joins a Ray cluster, got {address!r} with backend "
            f"{backend!r}; add --backend ray or drop --address."
        )

    if backend == "ray":
        mapper: ProcessPoolMapper | RayMapper | None = RayMapper(
            problem, workers=workers, address=address
        )
    elif workers is not None and workers > 1:
        mapper = ProcessPoolMapper(problem, workers)
    else:
        mapper = None
    try:
        yield mapper or serial_map
    finally:
        if mapper is not None:
            mapper.close()


def in_order(
    submit: Callable[[np.ndarray], Any],
    result: Callable[[Any], Expansion],
    chunks: Iterable[np.ndarray],
    window: int,
) -> Iterator[Expansion]:
    """Results of ``submit``-ted chunks in chunk order, ``window`` chunks in flight.

    Args:
        submit: starts the expansion of one chunk and returns a handle.
        result: waits for a handle and returns its expansion.
        chunks: the chunks, consumed as the window moves.
        window: how many chunks may be submitted and not yet yielded, >= 1.
    """
    pending: deque[Any] = deque()
    for chunk in chunks:
        pending.append(submit(chunk))
        if len(pending) >= window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


def expand_single_threaded(problem: QuantizedProblem, states: np.ndarray) -> Expansion:
    """``expand_chunk`` with torch on one thread: the task each remote worker runs."""
    torch.set_num_threads(1)
    return expand_chunk(problem, states)


# The problem of this worker process, set once by `_start_worker`.
_worker_problem: QuantizedProblem | None = None


def _start_worker(problem: QuantizedProblem) -> None:
    """Initializer of a pool worker: keep the problem, and run torch on one thread."""
    global _worker_problem
    _worker_problem = problem
    torch.set_num_threads(1)


def _expand_in_worker(states: np.ndarray) -> Expansion:
    """Expand a chunk with the problem this worker was started with."""
    assert _worker_problem is not None, "pool worker started without a problem"
    return expand_chunk(_worker_problem, states)


class ProcessPoolMapper:
    """Expand chunks in a pool of local worker processes, results in chunk order.

    Workers are spawned (not forked: a fork of a process whose torch has started its
    thread pool can hang) and receive the problem once, through the pool's
    initializer; each chunk then travels alone.

    Args:
        problem: the MDP; the mapper refuses any other.
        workers: number of worker processes, >= 2.
    """

    def __init__(self, problem: QuantizedProblem, workers: int):
        self.problem = problem
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(problem,),
        )

    def __call__(
        self, problem: QuantizedProblem, chunks: Iterable[np.ndarray]
    ) -> Iterator[Expansion]:
        _check_problem(self.problem, problem)
        return in_order(
            lambda chunk: self.executor.submit(_expand_in_worker, chunk),
            Future.result,
            chunks,
            IN_FLIGHT_PER_WORKER * self.workers,
        )

    def close(self) -> None:
        """Stop the workers; chunks not started yet are dropped."""
        self.executor.shutdown(wait=True, cancel_futures=True)


class RayMapper:
    """Expand chunks as Ray tasks, results in chunk order.

    Without ``address`` a local cluster is started for this run: no dashboard, every
    server on the loopback interface only, ``workers`` CPUs (default: all), shut down
    by ``close``. With ``address`` the driver joins that cluster and ``close`` only
    disconnects. A Ray connection this process already holds is used as it is.

    The workers of a cluster joined by address must import the same ``ocformer``
    (and torch) as this process: install it on every node.

    Args:
        problem: the MDP, put into the object store once.
        workers: CPUs of a local cluster; ignored when joining or already connected.
        address: ``HOST:PORT`` of a running cluster, or None for a local one.
    """

    def __init__(
        self,
        problem: QuantizedProblem,
        *,
        workers: int | None = None,
        address: str | None = None,
    ):
        ray = import_ray(local=address is None)
        self.ray = ray
        self.problem = problem
        self.connected_here = not ray.is_initialized()
        if self.connected_here:
            _init_ray(ray, workers=workers, address=address)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.window = IN_FLIGHT_PER_WORKER * max(cpus, 1)
            self.problem_ref = ray.put(problem)
            self.task = ray.remote(num_cpus=1)(expand_single_threaded)
        except BaseException:
            self.close()
            raise
        logger.info("ray: %d CPUs, %d chunks in flight", cpus, self.window)

    def __call__(
        self, problem: QuantizedProblem, chunks: Iterable[np.ndarray]
    ) -> Iterator[Expansion]:
        _check_problem(self.problem, problem)
        return in_order(
            lambda chunk: self.task.remote(self.problem_ref, chunk),
            self.ray.get,
            chunks,
            self.window,
        )

    def close(self) -> None:
        """Shut down the cluster this mapper started, or disconnect from it."""
        self.problem_ref = None
        if self.connected_here and self.ray.is_initialized():
            self.ray.shutdown()


def import_ray(*, local: bool) -> Any:
    """Import ray, without usage statistics and, for a local cluster, on loopback.

    Ray reads both settings from the environment when it is first imported. Its
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes a node take the loopback address,
    and Ray's servers then listen on loopback only (as they do on macOS); a driver
    that joins a cluster by address needs a routable address, so it is set only for
    a local cluster.

    Raises:
        ConfigError: if ray is not installed.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "`backend` ray needs the ray package, which is not installed; run "
            "pip install ray, or use --backend local."
        ) from None
    return ray


def _init_ray(ray: Any, *, workers: int | None, address: str | None) -> None:
    """Start a loopback-only local cluster, or join the one at ``address``."""
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        try:
            ray.init(
                address="local",
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                **options,
            )
        except Exception as error:
            raise ConfigError(
                f"cannot start a local Ray cluster: {error}; check that ray works "
                "here, or use --backend local."
            ) from None
        node = ray.util.get_node_ip_address()
        if node != LOOPBACK:
            ray.shutdown()
            raise ConfigError(
                f"the local Ray cluster took address {node}, not loopback, because "
                "ray was imported before ocformer could configure it; set "
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray, or pass "
                "--address of a cluster you started."
            )
        return

    try:
        ray.init(address=address, **options)
    except Exception as error:
        raise ConfigError(
            f"cannot join the Ray cluster at `address` {address!r}: {error}; check "
            "the address (HOST:PORT of the head node), or drop --address to start "
            "a local cluster."
        ) from None


def _check_problem(expected: QuantizedProblem, given: QuantizedProblem) -> None:
    """A mapper's workers hold one problem; expanding another would be wrong."""
    if given is not expected:
        raise ValueError(
            "this mapper was opened for another problem; open one per problem with "
            "open_mapper(problem, ...)."
        )
