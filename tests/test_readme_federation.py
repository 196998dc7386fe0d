"""README's federation section, run as written: its three node configs, its `serve` commands and
its agency commands, on free loopback ports instead of 8443-8445; and the first `send` each node
prints at start must reach that very node.

Before, the example config had no `port` (all three wanted 8443), each node's hint was a
`gateway send` without `--config` (it went to whatever listened on 8443), and `serve --network
party` without peers started silently.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"
GATEWAY = [sys.executable, "-m", "gateway.cli"]


def federation_section() -> tuple[dict[str, str], list[str]]:
    """The node configs (file name → text) and the command lines of README's federation section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## One node per network", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    configs = {
        body.splitlines()[0].removeprefix("# ").strip(): body for lang, body in blocks if lang == "toml"
    }
    commands = next(body for lang, body in blocks if lang == "" and " serve" in body)
    return configs, [line.split("  #")[0].strip() for line in commands.splitlines() if line.strip()]


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "gateway", command
    return GATEWAY + words[1:]


async def run(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_HOME"}  # README: "in the home"
    return await asyncio.to_thread(
        subprocess.run, argv(command), cwd=home, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_section_has_a_config_with_a_port_for_every_network() -> None:
    configs, commands = federation_section()
    assert sorted(configs) == ["node-front.toml", "node-government.toml", "node-party.toml"]
    ports = [re.search(r"^port = (\d+)", body, re.M) for body in configs.values()]
    assert all(ports) and len({p.group(1) for p in ports if p}) == 3, "each node needs its own port"
    assert all(f"--config {name} serve" in " ".join(commands) for name in configs)


async def test_readme_federation_runs_as_written(home: Path) -> None:
    configs, commands = federation_section()
    ports = {
        p: str(free_port()) for body in configs.values() for p in re.findall(r"^port = (\d+)", body, re.M)
    }

    def local(text: str) -> str:  # README's ports, here free ones
        return re.sub(r"\b(8443|8444|8445)\b", lambda m: ports[m.group(1)], text)

    for name, body in configs.items():
        (home / name).write_text(local(body), encoding="utf-8")
    serves = [c for c in commands if c.endswith(" serve")]
    assert len(serves) == 3
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_HOME"}
    procs, logs = [], []
    try:
        for i, command in enumerate(serves):
            log = home / f"node-{i}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(subprocess.Popen(argv(command), cwd=home, env=env, stdout=out, stderr=out))
        for proc, log in zip(procs, logs, strict=True):
            for _ in range(600):
                if "gateway: serving on" in log.read_text(errors="replace"):
                    break
                assert proc.poll() is None, log.read_text(errors="replace")
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"a node did not start: {log.read_text(errors='replace')}")

        # The first `send` each node prints reaches that node (an agency at another network's
        # node is refused), so it succeeds.
        for log in logs:
            lines = log.read_text(errors="replace").splitlines()
            hint = lines[lines.index(next(x for x in lines if "send a first document" in x)) + 1].strip()
            assert "--config" in hint, hint
            sent = await run(home, hint)
            assert sent.returncode == 0, (hint, sent.stderr)

        # README's agency commands, in order, ID being what the send answered.
        doc_id = ""
        for command in commands:
            if command.endswith(" serve"):
                continue
            command = command.replace(" ID", f" {doc_id}") if doc_id else command
            for _ in range(100):  # a crossing takes a moment: the recipient's node may not have it yet
                done = await run(home, command)
                arrived = " inbox " not in command or doc_id in done.stdout
                if (done.returncode == 0 and arrived) or (done.returncode and "not_found" not in done.stderr):
                    break
                await asyncio.sleep(0.1)
            assert done.returncode == 0, (command, done.stderr)
            if " send " in command:
                doc_id = done.stdout.split()[0]
            if " inbox " in command:
                assert doc_id in done.stdout
            if " receipts " in command:
                assert "000.00.00.A01" in done.stdout and "000.00.00.I01" in done.stdout
        assert doc_id and (home / "received.xml").exists() and (home / "received-front.xml").exists()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


async def test_a_network_node_without_peers_is_refused_with_what_to_do(home: Path) -> None:
    refused = await run(home, "gateway serve --network party")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "has no [peers]" in refused.stderr, refused.stderr
    assert "gateway --config FILE serve" in refused.stderr
    assert not (home / "gateway.db").exists()
