#!/usr/bin/env bash
# The whole test suite: installs what it needs (see install.sh) and runs it once per Python:
# python3 (3.11+, .venv) and, when they are on the machine (on PATH or through pyenv), 3.12
# (.venv312) and 3.13 (.venv313), both with mitmproxy 12; and once more on python3 with the
# wsinspect engines under test relaying through mitmproxy's WebSocket layer (--relay
# mitmproxy) instead of the raw relay, since both paths are offered. Every leg runs even when
# an earlier one failed; the end prints one summary line per leg. Exit status: non-zero when any leg
# failed, including pytest's 5 ("no tests ran"). Arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."

interpreter() {  # the real executable behind a command (pyenv's shims print errors when unset)
  "$1" -c 'import sys; print(sys.executable)' 2>/dev/null
}

find_python() {  # find_python 3.12 -> the path of a python3.12, if the machine has one
  local minor=$1 version
  if interpreter "python$minor"; then return; fi
  command -v pyenv >/dev/null 2>&1 || return 1
  version=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1)
  [ -n "$version" ] && interpreter "$(pyenv root)/versions/$version/bin/python$minor"
}

interrupted=0
trap 'interrupted=1' INT
summary=()
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_leg() {  # run_leg PYTHON VENV [PYTEST ARGS]: install into VENV, run the suite, note one line
  local python=$1 venv=$2 version status line
  version=$("$python" -c 'import platform; print(platform.python_version())')
  [[ " ${*:3} " == *" --relay mitmproxy "* ]] && version="$version (--relay mitmproxy)"
  echo "== Python $version ($venv)"
  if ! PYTHON="$python" VENV="$venv" bash install.sh --test; then
    summary+=("FAIL  Python $version: install.sh --test failed")
    failed=1
    return
  fi
  "$venv/bin/python" -m pytest -p no:cacheprovider "${@:3}" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  # pytest's last line, "=== 3 failed, 200 passed in 9.87s (0:00:09) ===" (no "=" with -q)
  line=$(grep -E ' in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')
  local mitmproxy
  mitmproxy=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mitmproxy"))')
  if [ "$status" = 0 ]; then
    summary+=("ok    Python $version, mitmproxy $mitmproxy: ${line:-exit 0}")
  else
    summary+=("FAIL  Python $version, mitmproxy $mitmproxy: ${line:-no summary} (pytest exit $status)")
    failed=1
  fi
}

seen=()
for candidate in python3 3.12 3.13; do
  if [ "$candidate" = python3 ]; then
    python=$(interpreter python3) || { echo "tests/run.sh: no python3" >&2; exit 1; }
    venv=.venv
  else
    python=$(find_python "$candidate") || continue
    venv=.venv${candidate//./}
  fi
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ " ${seen[*]} " == *" $version "* ]] && continue  # python3 may itself be the 3.12
  seen+=("$version")
  run_leg "$python" "$venv" "$@"
  [ $interrupted = 0 ] && [ "$candidate" = python3 ] && run_leg "$python" "$venv" "$@" --relay mitmproxy
  if [ $interrupted = 1 ]; then
    summary+=("FAIL  interrupted: the remaining legs did not run")
    failed=1
    break
  fi
done

echo
echo "== tests/run.sh summary"
printf '%s\n' "${summary[@]}"
exit $failed
