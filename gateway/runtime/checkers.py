"""Where the CPU phase of a submission runs: package checker processes, a CPU budget per package,
and a bounded queue before them served in turn between agencies.

Why processes, measured on this project's 2-core machine with a package of 30,000 namespace
declarations (2.8 s to parse, validate and verify): run in a worker thread, it still froze the
event loop for 1.3 s at a time, because signxml copies and canonicalises the tree in long C
calls that hold the GIL; run in a worker process, the loop's longest pause was 8 ms. And a process
can be stopped when its budget runs out; a thread cannot.

The budget is the checker's own CPU time, counted by the kernel: before each job the checker arms
``ITIMER_PROF``, whose signal ends the process even in the middle of a C call, and the node
answers ``400 too_expensive`` (``PackageTooExpensive``) and starts a fresh checker for the next
job. A wall-clock bound on top (``WALL_FACTOR``) only catches a checker starved of any CPU.

Memory is bounded the same way, by the kernel (``RLIMIT_AS``): a package within every parser limit
can still make signxml hold gigabytes (3.1 GB measured for 25 MB of elements with 32 attributes
each, against 0.37 GB for a 47 MB package of attachments), and four checkers doing that at once
would bring the host down. A job that takes a checker near its cap is refused as too expensive.

A checker parses hostile bytes. Its verdict is believed (it runs the verifier), but its answers
are never run as code: they are unpickled with an allow-list (``_Answers``) that builds only the
gateway's own value classes. What the node sends a checker is pickled normally (the node is the
trusted side). Trust decisions stay in the node, where certificates are rotated and revoked while
it runs: a checker returns the certificate the verifier used, and ``Intake`` judges it with
``Trust``. (Loading trust into each checker, as carriers do, would mean renewing checkers on every
rotation, for no gain: the judgement is a cached lookup, well under a millisecond.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
import gc
import io
import logging
import os
import pickle
import resource
import signal
import struct
import sys
import time
import traceback
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import gateway
import schemas_xml
from gateway.crypto.xmlenc import EncryptionRecipient
from gateway.domain.body import Body, Spooled
from gateway.domain.xmlsafe import XmlLimits
from gateway.errors import CheckerFailed, CheckersBusy, GatewayError, PackageTooExpensive
from gateway.exchange.checking import Checked, check_package, ciphertext_file, encrypt_package

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">Q")  # every message on a checker's pipes: its length, then its bytes
_PIPE_SLICE = 1 << 20
_READY = b"ready"
WALL_FACTOR = 5.0  # wall-clock seconds a job may take per CPU second of its budget (plus one)
STARTUP_SECONDS = 30.0  # for a checker to import its modules and say it is ready
_STOP_SECONDS = 2.0
NEAR_MEMORY = 0.75  # of a checker's address space, reached by a job: the job is what took it there


# --- the checker process --------------------------------------------------------------------------


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        return None  # the node closed the pipe (stopped, or died): nothing more to do
    (size,) = _FRAME.unpack(header)
    return stream.read(size)


def _read_buffers(stream: BinaryIO) -> list[bytes]:
    """The out-of-band buffers after a request (the package's bytes): a count, then each framed."""
    header = stream.read(_FRAME.size)
    (count,) = _FRAME.unpack(header) if len(header) == _FRAME.size else (0,)
    return [stream.read(_FRAME.unpack(stream.read(_FRAME.size))[0]) for _ in range(count)]


def _write_buffers(stream: BinaryIO, buffers: list[pickle.PickleBuffer]) -> None:
    stream.write(_FRAME.pack(len(buffers)))
    for buffer in buffers:
        view = buffer.raw()
        stream.write(_FRAME.pack(len(view)))
        stream.write(view)
    stream.flush()


def _write_frame(stream: BinaryIO, data: bytes, *, flush: bool = True) -> None:
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)
    if flush:
        stream.flush()


def _run(op: str, args: tuple[Any, ...]) -> Checked | Body:
    if op == "check":
        raw, limits = args
        return check_package(raw, limits)
    raw, limits, recipients, out = args
    certs = [EncryptionRecipient(code, x509.load_der_x509_certificate(der)) for code, der in recipients]
    return encrypt_package(raw, limits, certs, out=out)


def _peak_bytes() -> int:
    """This checker's peak address space (``VmPeak``, what ``RLIMIT_AS`` bounds). Not
    ``ru_maxrss``: Linux carries that across ``execve`` from the process that started the checker,
    so a checker started by a node grown to near the cap would refuse every package at once."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux counts in KiB


# The parser's limits bound what a package makes of itself in memory: the costliest one they allow
# grew about 120-fold (bench/hostile_inbox.py). A job whose package, so grown, stays within the
# part of the cap above NEAR_MEMORY cannot have taken the checker there, and its peak is not read:
# reading /proc/self/status was 5% of a checker's time on 12 KB documents (py-spy, bench/throughput.py).
_GROWTH = 128


def _job_bytes(raw: object) -> int:
    if isinstance(raw, Spooled):
        return raw.size
    try:
        return memoryview(raw).nbytes  # type: ignore[arg-type]
    except TypeError:
        return 1 << 40  # not a buffer: read the peak, as for any large job


def _out_of_memory(memory_bytes: int) -> PackageTooExpensive:
    return PackageTooExpensive(
        f"checking the package needed more than a checker's {memory_bytes >> 20} MiB of memory; "
        "nothing was stored"
    )


def serve(requests: BinaryIO, answers: BinaryIO, *, memory_bytes: int | None = None) -> None:
    """A checker's life: one job at a time from ``requests``, each answered on ``answers``, until
    the node closes the pipe, or until a job took it near ``memory_bytes`` (its address space)."""
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    _write_frame(answers, _READY)
    while (request := _read_frame(requests)) is not None:
        received = _read_buffers(requests)
        op, args, budget = pickle.loads(request, buffers=received)  # noqa: S301 - from the node, which started us
        started = time.process_time()
        # Counted by the kernel in this process's CPU time; its signal's default action ends the
        # process, even inside a long C call where a Python-level timer could never run.
        signal.setitimer(signal.ITIMER_PROF, budget)
        try:
            answer: tuple[Any, ...] = ("ok", _run(op, args))
        except GatewayError as exc:
            answer = ("refused", exc)
        except MemoryError:
            answer = ("refused", _out_of_memory(memory_bytes or 0))
        except Exception as exc:
            # The traceback without the message: a library's message may quote the document.
            where = "".join(traceback.format_tb(exc.__traceback__))
            print(f"package checker: {type(exc).__name__}\n{where}", file=sys.stderr, flush=True)
            answer = ("failed", type(exc).__name__)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        # libxml2 reports a failed allocation as a parse or signature error: a job that took the
        # checker near its cap is refused as what it is, and the checker retires (so that its
        # peak, and its grown heap, start again from nothing in the next one).
        retire = (
            memory_bytes is not None
            and _job_bytes(args[0]) * _GROWTH >= memory_bytes * (1 - NEAR_MEMORY)
            and _peak_bytes() >= memory_bytes * NEAR_MEMORY
        )
        if retire and answer[0] != "ok":
            answer = ("refused", _out_of_memory(memory_bytes or 0))
        cpu = time.process_time() - started
        if answer[0] == "ok" and isinstance(answer[1], bytes):  # a ciphertext: out of band, as asked
            answer = ("ok", pickle.PickleBuffer(answer[1]))
        out_of_band: list[pickle.PickleBuffer] = []
        pickled = pickle.dumps((*answer, cpu, retire), protocol=5, buffer_callback=out_of_band.append)
        # One flush for the answer and its buffers: the node reads it when it is whole.
        _write_frame(answers, pickled, flush=False)
        _write_buffers(answers, out_of_band)
        if retire:
            return


def _main() -> None:
    # An ignored SIGPROF would be inherited across exec and switch the budget off.
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to the node's log, never into the answers
    schemas_xml.package_schema()  # compiled before the first budget starts, not inside it
    gc.freeze()  # start-up's objects live as long as the checker: no full collection walks them
    serve(sys.stdin.buffer, answers, memory_bytes=int(sys.argv[1]) if len(sys.argv) > 1 else None)


# --- the node's side ------------------------------------------------------------------------------

_VALUE_TYPES = {
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
}


class _Answers(pickle.Unpickler):
    """Builds only values: the gateway's dataclasses, enums and errors (and a few datetime types).
    Were a parser bug ever to let a package run code inside a checker, a plain unpickle of its
    answer would run that code in the node too."""

    def find_class(self, module: str, name: str) -> Any:
        found = _VALUE_TYPES.get((module, name))
        if found is not None:
            return found
        if (module, name) == ("builtins", "getattr"):
            # Some Python 3.11 releases (3.11.2, Debian 12's) pickle an enum member as
            # getattr(its class, its name): allowed for exactly that and nothing else.
            return _enum_member
        loaded = sys.modules.get(module) if module.startswith("gateway.") else None
        cls = getattr(loaded, name, None)
        if isinstance(cls, type) and (
            dataclasses.is_dataclass(cls) or issubclass(cls, (enum.Enum, GatewayError))
        ):
            return cls
        raise pickle.UnpicklingError(f"a checker answered with {module}.{name}, which is not a value")


def _enum_member(cls: object, name: object) -> enum.Enum:
    """``getattr`` as an answer may use it: a member of one of the gateway's enums, by name."""
    if (
        isinstance(cls, type)
        and issubclass(cls, enum.Enum)
        and cls.__module__.startswith("gateway.")
        and isinstance(name, str)
        and name in cls.__members__
    ):
        return cls[name]
    raise pickle.UnpicklingError("a checker answered with a getattr that is not a gateway enum member")


class _Checker:
    """One checker process, started when first needed and again after it ended."""

    def __init__(self, max_answer: int, memory_bytes: int) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._max_answer = max_answer
        self._memory_bytes = memory_bytes

    async def start(self) -> None:
        """Start the process if it is not running (``_started``, for a pool that warms up)."""
        await self._started()

    async def _started(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        # The checker runs this very code, wherever the node was imported from.
        source = str(Path(gateway.__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH")))),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(self._memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self._proc = proc
        try:
            async with asyncio.timeout(STARTUP_SECONDS):
                ready = await self._frame(proc)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            self.kill()
            raise CheckerFailed(f"a package checker did not start: {type(exc).__name__}") from exc
        if ready != _READY:
            self.kill()
            raise CheckerFailed("a package checker started but did not say it was ready")
        return proc

    async def _read(self, proc: asyncio.subprocess.Process) -> tuple[bytes, list[bytes]]:
        """One answer: its pickle and the out-of-band buffers after it (a ciphertext)."""
        assert proc.stdout is not None

        answer = await self._frame(proc)
        (count,) = _FRAME.unpack(await proc.stdout.readexactly(_FRAME.size))
        if count > 1:
            raise CheckerFailed(f"a package checker sent {count} buffers; an answer holds at most one")
        return answer, [await self._frame(proc) for _ in range(count)]

    async def _frame(self, proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stdout is not None
        (size,) = _FRAME.unpack(await proc.stdout.readexactly(_FRAME.size))
        if size > self._max_answer:
            raise CheckerFailed(f"a package checker sent {size} bytes, more than any answer holds")
        return await proc.stdout.readexactly(size)

    async def run(self, op: str, args: tuple[Any, ...], budget: float) -> Any:
        """The checker's answer to one job; raises its refusal, ``PackageTooExpensive`` when its
        budget ran out, ``CheckersBusy`` when even the wall-clock bound passed."""
        proc = await self._started()
        assert proc.stdin is not None
        # The package goes out of band, after the pickle, in slices awaited one by one: pickled in
        # band and written whole it was copied twice more in the node (the pickle, the pipe's
        # write buffer) while the checker read it.
        buffers: list[pickle.PickleBuffer] = []
        request = pickle.dumps((op, args, budget), protocol=5, buffer_callback=buffers.append)
        done = False
        try:
            async with asyncio.timeout(budget * WALL_FACTOR + 1.0):
                # The frames and a small package in one write: each write to the pipe is a system
                # call (five per job were 7% of the node's main-process samples on 12 KB documents).
                head: list[bytes | memoryview] = [
                    _FRAME.pack(len(request)),
                    request,
                    _FRAME.pack(len(buffers)),
                ]
                views = [buffer.raw() for buffer in buffers]
                while views and len(views[0]) <= _PIPE_SLICE:
                    view = views.pop(0)
                    head += [_FRAME.pack(len(view)), view]
                proc.stdin.write(b"".join(head))
                for view in views:
                    proc.stdin.write(_FRAME.pack(len(view)))
                    for at in range(0, len(view), _PIPE_SLICE):
                        proc.stdin.write(view[at : at + _PIPE_SLICE])
                        await proc.stdin.drain()
                await proc.stdin.drain()
                answer = await self._read(proc)
            done = True
        except (asyncio.IncompleteReadError, ConnectionError):
            done = True  # the checker ended: why decides the answer
            code = await proc.wait()
            if code == -signal.SIGPROF:
                raise PackageTooExpensive(
                    f"checking the package took more than its CPU budget of {budget:g} s; "
                    "it was stopped and nothing was stored"
                ) from None
            raise CheckerFailed(f"a package checker ended with status {code}") from None
        except TimeoutError:
            raise CheckersBusy(
                "the gateway is too busy to check this package now; nothing was stored",
                retry_after=budget,
            ) from None
        finally:
            if not done:  # timed out or cancelled half-way through a conversation: start afresh
                self.kill()
        try:
            kind, value, cpu, retire = _Answers(io.BytesIO(answer[0]), buffers=answer[1]).load()
        except Exception as exc:
            self.kill()
            raise CheckerFailed(f"a package checker's answer cannot be read: {exc}") from None
        log.debug("package checker: %s answered %s after %.3f s of CPU", op, kind, cpu)
        if retire:  # it exits after this answer; the next job starts a fresh one
            await self.stop()
        if kind == "refused" and isinstance(value, GatewayError):
            raise value
        if kind != "ok":
            raise CheckerFailed(f"a package checker failed with {value}")
        return value

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # end of requests: the checker returns from serve() and exits
        try:
            async with asyncio.timeout(_STOP_SECONDS):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _sent(raw: Body) -> pickle.PickleBuffer | Spooled:
    """A package in memory crosses out of band (see ``_Checker.run``); a spooled one by its name."""
    return pickle.PickleBuffer(raw) if isinstance(raw, bytes) else raw


class CheckerPool:
    """``PackageWork`` for a node: at most ``workers`` packages checked at once, each in a checker
    process within ``cpu_seconds`` of CPU (per job: a check, and an encryption for a classified
    document) and ``memory_mb`` of address space. At most ``queue`` packages wait for a checker,
    and one agency at most half of them; past that a package is refused at once with ``503
    checkers_busy`` and Retry-After. A checker that comes free takes the next agency's oldest
    waiting package in turn, so one agency sending expensive packages in a loop delays another's
    by at most one package per checker."""

    def __init__(
        self, *, workers: int, queue: int, cpu_seconds: float, memory_mb: int, max_bytes: int
    ) -> None:
        if workers < 1 or queue < 1 or not cpu_seconds > 0 or memory_mb < 1:
            raise ValueError("a checker pool needs workers, queue, cpu_seconds and memory_mb above 0")
        # An encrypted package is its base64 and a few hundred bytes per recipient.
        max_answer = max_bytes * 2 + (1 << 20)
        self._idle = [_Checker(max_answer, memory_mb << 20) for _ in range(workers)]
        self._all = tuple(self._idle)
        self._queue = queue
        self._share = max(1, queue // 2)
        self._cpu_seconds = cpu_seconds
        self._waiting: dict[str, deque[asyncio.Future[_Checker]]] = {}
        self._waiting_count = 0
        self._closed = False

    async def check(self, raw: Body, limits: XmlLimits, *, agency: str) -> Checked:
        value = await self._submit(agency, "check", (_sent(raw), limits))
        if not isinstance(value, Checked):
            raise CheckerFailed(f"a package checker answered a check with a {type(value).__name__}")
        return value

    async def encrypt(
        self, raw: Body, limits: XmlLimits, recipients: Sequence[EncryptionRecipient], *, agency: str
    ) -> Body:
        # Certificates cross as DER: the checker builds its own objects from them.
        ders = [(r.code, r.certificate.public_bytes(Encoding.DER)) for r in recipients]
        # A spooled package's ciphertext goes to the file made for it; only its name comes back.
        out = ciphertext_file(raw) if isinstance(raw, Spooled) else None
        value = await self._submit(agency, "encrypt", (_sent(raw), limits, ders, out))
        if out is None and isinstance(value, bytes):
            return value
        if out is not None and isinstance(value, Spooled) and value.path == out:
            return value  # the store checks its size and digest as it reads it
        raise CheckerFailed(f"a package checker answered an encryption with a {type(value).__name__}")

    async def _submit(self, agency: str, op: str, args: tuple[Any, ...]) -> Any:
        checker = await self._acquire(agency)
        try:
            return await checker.run(op, args, self._cpu_seconds)
        finally:
            self._release(checker)

    def _busy(self, why: str) -> CheckersBusy:
        return CheckersBusy(
            f"{why}; nothing was stored, send again in {max(1, round(self._cpu_seconds))} s",
            retry_after=self._cpu_seconds,
        )

    async def _acquire(self, agency: str) -> _Checker:
        if self._closed:
            raise self._busy("the gateway is stopping")
        if self._idle and not self._waiting:
            return self._idle.pop()
        mine = self._waiting.get(agency)
        if self._waiting_count >= self._queue:
            raise self._busy(f"all package checkers are busy and {self._queue} packages already wait")
        if mine is not None and len(mine) >= self._share:
            raise self._busy(f"agency {agency} already has {len(mine)} packages waiting for a checker")
        waiter: asyncio.Future[_Checker] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(agency, deque()).append(waiter)
        self._waiting_count += 1
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed a checker just as the caller went away
            else:
                self._forget(agency, waiter)
            raise

    def _forget(self, agency: str, waiter: asyncio.Future[_Checker]) -> None:
        queue = self._waiting.get(agency)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._waiting_count -= 1
            if not queue:
                del self._waiting[agency]

    def _release(self, checker: _Checker) -> None:
        while self._waiting:
            agency = next(iter(self._waiting))
            queue = self._waiting.pop(agency)
            waiter = queue.popleft()
            self._waiting_count -= 1
            if queue:
                self._waiting[agency] = queue  # to the back of the line of agencies
            if not waiter.done():
                waiter.set_result(checker)
                return
        self._idle.append(checker)

    async def warm(self) -> None:
        """Start every checker process now rather than for the first packages."""
        await asyncio.gather(*(checker.start() for checker in self._all))

    async def close(self) -> None:
        """Refuse what still waits, and stop every checker (each finishes the job it holds)."""
        self._closed = True
        for queue in self._waiting.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(self._busy("the gateway is stopping"))
        self._waiting.clear()
        self._waiting_count = 0
        await asyncio.gather(*(c.stop() for c in self._all))


if __name__ == "__main__":
    _main()
