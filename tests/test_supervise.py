"""The one supervisor loop: each step in its order with the sleeps, and no failure stops it."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import pytest

from gateway.runtime.supervise import every


async def _run(first: Literal["step", "sleep"], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    async def sleep(seconds: float) -> None:
        seen.append(f"sleep {seconds:g}")
        if len(seen) >= 6:
            raise asyncio.CancelledError  # the node stopping

    async def step() -> None:
        seen.append("step")
        if seen.count("step") == 1:
            raise RuntimeError("the first step fails")

    monkeypatch.setattr(asyncio, "sleep", sleep)  # the one the loop awaits
    with pytest.raises(asyncio.CancelledError):
        await every(5, step, failure="step failed; trying again", first=first)
    return seen


async def test_work_first_then_sleep_and_a_failure_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    assert await _run("step", monkeypatch) == ["step", "sleep 5", "step", "sleep 5", "step", "sleep 5"]
    # Logged under the module that defines the step, where the work lives.
    assert [(r.name, r.getMessage()) for r in caplog.records] == [(__name__, "step failed; trying again")]


async def test_sleep_first_then_work(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _run("sleep", monkeypatch) == [
        "sleep 5",
        "step",
        "sleep 5",
        "step",
        "sleep 5",
        "step",
        "sleep 5",
    ]
