#!/usr/bin/env bash
# The whole test suite: installs what it needs (see install.sh), runs it on Python 3.11+ and,
# when a python3.12 is on the machine, once more there (mitmproxy 12).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python312() {
  if python3.12 --version >/dev/null 2>&1; then echo python3.12; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12' | tail -n 1)
    [ -n "$v" ] && echo "$(pyenv root)/versions/$v/bin/python3.12"
  fi
}

bash install.sh --test
echo "== tests on $(.venv/bin/python --version)"
.venv/bin/python -m pytest -p no:cacheprovider "$@"

py312=$(find_python312 || true)
if [ -n "$py312" ]; then
  PYTHON="$py312" VENV=.venv312 bash install.sh --test
  echo "== tests on $(.venv312/bin/python --version)"
  .venv312/bin/python -m pytest -p no:cacheprovider "$@"
fi
