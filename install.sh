#!/usr/bin/env bash
# Installs wsinspect into ./.venv (and, with --test, everything the test suite needs).
# Works on a fresh Debian 12 with Python 3.11+; system packages come through apt when root.
#   bash install.sh            # the app
#   bash install.sh --test     # the app, test tools, and every program the suite runs
#                              # (TEST_PROGRAMS below), Node's ws for the Node client tests
#   PYTHON=python3.12 VENV=.venv312 bash install.sh --test
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

# Every program the tests, benches and scripts run, as `program=Debian package`: the one
# list of them (tests/test_install_provides.py fails when the sources call one not listed).
TEST_PROGRAMS=(
  bash=bash
  sh=dash
  cat=coreutils
  env=coreutils
  sleep=coreutils
  unshare=util-linux
  sysctl=procps
  ip=iproute2
  iptables=iptables
  nginx=nginx
  apache2=apache2
  haproxy=haproxy
  caddy=caddy
  squid=squid
  mosquitto=mosquitto
  rabbitmq-server=rabbitmq-server
  epmd=erlang-base
  tmux=tmux
  chromium=chromium
  node=nodejs
  npm=npm
  rsvg-convert=librsvg2-bin
)

have_program() {  # root's daemons live in sbin, which a user's PATH may lack
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

apt_packages=()
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_packages+=(python3-venv); fi
if [ $with_tests = 1 ]; then
  for entry in "${TEST_PROGRAMS[@]}"; do
    have_program "${entry%%=*}" || apt_packages+=("${entry#*=}")
  done
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "install.sh: apt-get install ${apt_packages[*]}"
    # The suite starts its own nginx, apache2, squid... from temporary configs; their system
    # services are not started here (two of them on port 80 would fail the install).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e $policy ]; then
      trap 'rm -f $policy' EXIT
      printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy
    fi
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
  (cd tests/node && npm ci --loglevel=error --no-audit --no-fund >/dev/null)  # errors still show
fi
