# Puts this checkout's .venv/bin first on PATH, creating .venv (or re-installing, when
# pyproject.toml changed since the last install) first.
#
# Safe to source from your own shell (`source scripts/_env.sh`): it sets no shell option, does
# not change directory and leaves no variable behind but PATH; the install runs in a subshell
# with its own strict mode, so a failure there returns 1 and leaves your shell as it was.
# scripts/check, scripts/serve and scripts/test source it after setting their own strict mode.
_gateway_env_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
if (
  set -euo pipefail
  cd "$_gateway_env_root"
  py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
  fi
  stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    rm -f .venv/.installed-* && touch "$stamp"
  fi
); then
  case ":$PATH:" in
    *":$_gateway_env_root/.venv/bin:"*) ;;  # sourced twice: once on PATH is enough
    *) export PATH="$_gateway_env_root/.venv/bin:$PATH" ;;
  esac
  unset _gateway_env_root
else
  echo "scripts/_env.sh: could not set up $_gateway_env_root/.venv (see the pip output above); your shell is unchanged" >&2
  unset _gateway_env_root
  false  # the status of `source`: 1, without exiting the shell that sourced it
fi
