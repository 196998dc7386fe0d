"""``source scripts/_env.sh`` in the user's own shell, as README says: the shell must survive.

It once ran ``set -euo pipefail`` and ``cd`` in the caller's shell, so the next failing command
(a ``gateway fetch`` of a wrong id) closed the terminal.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# An interactive bash (as in a terminal), in another directory: source, then fail, then report.
SESSION = """
before="$(set +o; shopt -p)"
source {env}
echo "sourced=$?"
false
gateway-no-such-command 2>/dev/null
after="$(set +o; shopt -p)"
[ "$before" = "$after" ] && echo "options unchanged"
echo "alive in $PWD"
command -v gateway
"""


def interactive_bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "--norc", "--noprofile", "-i", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env},
        stdin=subprocess.DEVNULL,
    )


def test_sourcing_env_leaves_the_shell_alive_where_it_was(tmp_path: Path) -> None:
    result = interactive_bash(SESSION.format(env=ROOT / "scripts" / "_env.sh"), tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert "sourced=0" in lines
    assert "options unchanged" in lines, "sourcing changed the shell's options (set -e, pipefail…)"
    assert f"alive in {tmp_path}" in lines, "the shell died or changed directory"
    assert lines[-1] == str(ROOT / ".venv" / "bin" / "gateway")


def test_a_failed_install_returns_1_and_the_shell_goes_on(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "_env.sh", checkout / "scripts")
    shutil.copy(ROOT / "pyproject.toml", checkout)
    session = f'source {checkout / "scripts" / "_env.sh"}; echo "sourced=$?"; echo "alive in $PWD"'
    result = interactive_bash(session, tmp_path, PYTHON="false")  # creating the venv fails
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["sourced=1", f"alive in {tmp_path}"]
    assert "could not set up" in result.stderr and "your shell is unchanged" in result.stderr
    assert not (checkout / ".venv").exists()
