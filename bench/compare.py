"""The gateway against the floor of its stack, measured in one sitting, alternating.

Runs ``../shared/tools/floor_bench.py N`` (aiohttp + mTLS, lxml parse, one signxml verify, one
signxml seal, one SQLite insert: the least work per document on this stack) and
``bench/throughput.py N`` (a real ``gateway serve``, end to end) by turns, ``--rounds`` times
each, and prints each figure and the gateway's ratios to the floor's median:

    .venv/bin/python bench/compare.py [N] [--rounds R] [--recipients K]

A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = ROOT.parent / "shared" / "tools" / "floor_bench.py"
_FLOOR = re.compile(r"floor: .*?: (\d+) docs/s")
_GATEWAY = re.compile(r"accepted (\d+) docs/s, delivered (\d+) docs/s .*?p50 ([\d.]+) ms, p99 ([\d.]+) ms")


def _run(args: list[str]) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--recipients", type=int, default=1)
    args = parser.parse_args()
    if not FLOOR.exists():
        raise SystemExit(f"the floor benchmark is not at {FLOOR} (../shared beside the checkout)")
    floors: list[float] = []
    accepted: list[float] = []
    delivered: list[float] = []
    for round_ in range(1, args.rounds + 1):
        out = _run([str(FLOOR), str(args.n)])
        found = _FLOOR.search(out)
        if found is None:
            raise SystemExit(f"cannot read the floor's figure from: {out!r}")
        floors.append(float(found.group(1)))
        print(f"round {round_}: {out.strip()}", flush=True)
        out = _run(["-m", "bench.throughput", str(args.n), "--recipients", str(args.recipients)])
        figures = _GATEWAY.search(out)
        if figures is None:
            raise SystemExit(f"cannot read the gateway's figures from: {out!r}")
        accepted.append(float(figures.group(1)))
        delivered.append(float(figures.group(2)))
        print(f"round {round_}: {out.strip().splitlines()[-1]}", flush=True)
    floor = statistics.median(floors)
    took, gave = statistics.median(accepted), statistics.median(delivered)
    print(
        f"floor median {floor:.0f} docs/s; gateway with {args.recipients} recipient(s): "
        f"accepted {took:.0f} docs/s ({took / floor:.2f}x floor), "
        f"delivered {gave:.0f} docs/s ({gave / floor:.2f}x floor)"
    )


if __name__ == "__main__":
    main()
