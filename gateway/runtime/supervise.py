"""The one supervisor loop: run a node's periodic step for ever, and let no failure stop it.

The node's background work (the deadline watcher, the event feed, the audit-head signer, the
certificate checks) is written as one-step methods that know nothing of loops or tasks; the
composition root (``gateway.runtime.node``) runs each under :func:`every` (as a named task:
:func:`start_every`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal


async def every(
    seconds: float,
    step: Callable[[], Awaitable[object]],
    *,
    failure: str,
    first: Literal["step", "sleep"] = "step",
) -> None:
    """Await ``step()`` every ``seconds`` until cancelled; ``first`` says whether to begin with
    the step or with a sleep. An exception in a step is logged (message ``failure``) and the next
    step comes after the usual sleep.

    The failure is logged under the logger of the module that defines ``step``, so the log line
    names where the work lives, as it did when each loop was written beside its step.
    """
    log = logging.getLogger(step.__module__)
    if first == "sleep":
        await asyncio.sleep(seconds)
    while True:
        try:
            await step()
        except Exception:
            log.exception(failure)
        await asyncio.sleep(seconds)


def start_every(
    name: str,
    seconds: float,
    step: Callable[[], Awaitable[object]],
    *,
    failure: str,
    first: Literal["step", "sleep"] = "step",
) -> asyncio.Task[None]:
    """:func:`every` as a task named ``name`` on the running loop; cancel the task to stop it."""
    return asyncio.create_task(every(seconds, step, failure=failure, first=first), name=name)
