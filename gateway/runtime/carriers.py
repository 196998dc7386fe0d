"""Where the CPU work of carrying runs: a worker thread (the default, and what tests use) or a pool
of worker processes that load the adapters' keys once and use every core."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from gateway.adapters.network import NetworkAdapter
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.vocabulary import Network
from gateway.exchange.courier import Outcome, carry_batch
from gateway.exchange.ports import RouteJob


class ThreadCarrier:
    """Carries in one worker thread of this process: the simple default, and what tests use."""

    def __init__(self, adapters: Mapping[Network, NetworkAdapter], clock: Clock) -> None:
        self._adapters = adapters
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="carrier")

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, carry_batch, jobs, self._adapters, self._clock)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


_worker_adapters: dict[Network, NetworkAdapter] = {}
_worker_clock = SystemClock()


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """A worker of a node that was killed (SIGKILL, OOM) would otherwise live on, orphaned, holding
    keys in memory; when the node restarts, its new workers would join them. Exit instead."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_worker(certs_dir: str, registry_path: str, networks: tuple[str, ...], parent: int) -> None:
    # The node's pid comes from the node: read here, it would already be init's if the node was
    # killed while this worker was still starting (seen: SIGKILL during the first carry).
    _exit_with_parent(parent)
    # Keys are loaded once per worker process: parsing PEM per document would cost 40x.
    import schemas_xml
    from gateway.infra.files.keys import file_trust, load_seal_key
    from gateway.infra.files.registry_csv import load_registry

    schemas_xml.transfer_schema()  # compiled now, not inside the first route's seal check
    trust = file_trust(Path(certs_dir), load_registry(Path(registry_path)))
    for network in map(Network, networks):
        _worker_adapters[network] = NetworkAdapter(
            load_seal_key(Path(certs_dir), network), trust, _worker_clock
        )
    gc.freeze()  # start-up's objects live as long as the worker: no full collection walks them


def _carry_in_worker(jobs: list[RouteJob]) -> list[Outcome]:
    return carry_batch(jobs, _worker_adapters, _worker_clock)


def _ready() -> None:
    """Nothing: run once per worker at start, so that its process (and its initializer) exists."""


class ProcessCarrier:
    """Carries in worker processes, so sealing and verifying use every core, not one GIL."""

    def __init__(
        self,
        certs_dir: Path,
        registry_path: Path,
        *,
        workers: int,
        networks: tuple[Network, ...] = tuple(Network),
    ) -> None:
        self._workers = max(1, workers)
        self._executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a process that runs threads
            initializer=_start_worker,
            initargs=(str(certs_dir), str(registry_path), tuple(n.value for n in networks), os.getpid()),
        )

    async def warm(self) -> None:
        """Start every worker now: the pool starts them at its first batches otherwise, each an
        interpreter loading the gateway and its keys (about a second of CPU) while documents
        arrive."""
        loop = asyncio.get_running_loop()
        # The pool starts a process per job submitted while none is idle: as many jobs as workers.
        await asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(self._workers)))

    async def carry(self, jobs: list[RouteJob]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        # The courier named each package by its digest: only that crosses to the workers, never
        # the bytes of a package they never read.
        outcomes: dict[int, Outcome] = {}
        ready = list(enumerate(jobs))
        size = max(1, -(-len(ready) // self._workers))
        chunks = [ready[i : i + size] for i in range(0, len(ready), size)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, _carry_in_worker, [job for _, job in c]) for c in chunks)
        )
        for chunk, carried in zip(chunks, results, strict=True):
            for (i, _), (_, result) in zip(chunk, carried, strict=True):
                outcomes[i] = (jobs[i], result)
        return [outcomes[i] for i in range(len(jobs))]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
