#!/usr/bin/env bash
# Installs wsinspect into ./.venv (and, with --test, everything the test suite needs).
# Works on a fresh Debian 12 with Python 3.11+; system packages come through apt when root.
#   bash install.sh            # the app
#   bash install.sh --test     # the app, test tools, nginx, iptables, iproute2, tmux, and the
#                              # real clients the tests drive (chromium, Node's ws)
#   PYTHON=python3.12 VENV=.venv312 bash install.sh --test
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

apt_packages=()
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_packages+=(python3-venv); fi
if [ $with_tests = 1 ]; then
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx)
  for proxy in apache2 haproxy caddy squid; do  # the proxies tests/test_proxies.py runs
    command -v $proxy >/dev/null 2>&1 || [ -x /usr/sbin/$proxy ] || apt_packages+=($proxy)
  done
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || apt_packages+=(iptables)
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || apt_packages+=(iproute2)
  command -v tmux >/dev/null 2>&1 || apt_packages+=(tmux)
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_packages+=(mosquitto)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || apt_packages+=(rabbitmq-server)  # Web STOMP
  command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
  command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "install.sh: apt-get install ${apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  else
    echo "install.sh: not root, so not installing: ${apt_packages[*]}" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ $with_tests = 1 ]; then
  "$VENV/bin/python" -m pip install -q -e ".[test]"
else
  "$VENV/bin/python" -m pip install -q -e .
fi
if [ $with_tests = 1 ] && command -v npm >/dev/null 2>&1; then
  (cd tests/node && npm ci --silent --no-audit --no-fund >/dev/null)
fi
