#!/usr/bin/env bash
# Rehearses the README's two commands on a truly fresh Debian 12: builds a minimal root with
# `debootstrap --variant=minbase bookworm`, copies a fresh clone of this checkout's last commit
# into it and, chrooted there as root, runs
#   1. bash install.sh, then the app: in a pseudo-terminal (the TUI), headless, and the demo
#   2. bash tests/run.sh
# printing the tail of each (whole logs are kept in a directory it names). Not part of CI;
# run it before changing what the suite needs. Needs root and debootstrap; takes ~30 s to
# build the root, minutes for the apt and pip installs, and the suite's own time.
# The root has no pyenv, so only the python3 (3.11) leg of tests/run.sh runs in there.
#   sudo bash tools/rehearse_fresh_debian.sh [--suite-timeout SECONDS]
set -euo pipefail

suite_timeout=5400
while [ $# -gt 0 ]; do
  case $1 in
    --suite-timeout) suite_timeout=$2; shift 2 ;;
    *) echo "usage: $0 [--suite-timeout SECONDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "rehearse: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "rehearse: apt-get install debootstrap" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse HEAD)
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  echo "rehearse: note: uncommitted changes are not rehearsed; this runs commit ${commit:0:12}"
fi
work=$(mktemp -d /var/tmp/wsinspect-rehearsal.XXXXXX)
logs=$(mktemp -d /var/tmp/wsinspect-rehearsal-logs.XXXXXX)
root=$work/root
mkdir "$root"

mounts_under_root() {  # deepest first
  awk -v root="$root" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r
}

cleanup() {
  local status=$? pid left
  trap - EXIT INT TERM HUP
  # The background jobs lead process groups of their own (setsid): end each whole group.
  for pid in $(jobs -p); do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do  # whatever still runs in the root
    if [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  sleep 0.5
  for mount_point in $(mounts_under_root); do
    umount "$mount_point" 2>/dev/null || umount --lazy "$mount_point" 2>/dev/null || true
  done
  left=$(mounts_under_root)
  if [ -n "$left" ]; then  # never delete through a mount that is still there
    echo "rehearse: still mounted, so $work is left in place: $left" >&2
  else
    rm -rf --one-file-system "$work"
  fi
  echo "rehearse: logs in $logs"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
echo "rehearse: debootstrap --variant=minbase bookworm (${mirror:-http://deb.debian.org/debian})"
setsid debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" \
  >"$logs/debootstrap.log" 2>&1 &
wait $! || { tail -n 20 "$logs/debootstrap.log"; exit 1; }

# Reach the package registries as this machine does: its apt sources and Acquire settings,
# CA certificates, pip and npm configuration, and the local paths those name.
copy_in() {  # copy_in PATH...: each existing file or directory to the same place in the root
  local path
  for path in "$@"; do
    [ -e "$path" ] || continue
    mkdir -p "$root$(dirname "$path")"
    cp -a "$path" "$root$path"
  done
}
if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null || [ -e /etc/apt/sources.list ]; then
  rm -f "$root/etc/apt/sources.list"  # debootstrap's; the host's sources replace it
fi
copy_in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
  /etc/apt/trusted.gpg.d /etc/apt/keyrings \
  /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates \
  /etc/pip.conf /etc/xdg/pip /root/.config/pip /etc/npmrc /usr/etc/npmrc /root/.npmrc \
  /etc/resolv.conf /etc/hosts
for conf in /etc/apt/apt.conf.d/*; do
  grep -q 'Acquire::' "$conf" && copy_in "$conf"
done
env_names=$(env | grep -oE '^(PIP_[A-Z_]+|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|NODE_EXTRA_CA_CERTS|HTTPLIB2_CA_CERTS|[Hh][Tt][Tt][Pp][Ss]?_[Pp][Rr][Oo][Xx][Yy]|[Nn][Oo]_[Pp][Rr][Oo][Xx][Yy])=' | tr -d = || true)
passed_env=()
for name in $env_names; do passed_env+=("$name=${!name}"); done
# Local wheel directories and indexes the pip configuration names (their top two levels, as
# an index's pages may link upwards), read-only.
local_paths=$( (cat /etc/pip.conf /etc/xdg/pip/*.conf /root/.config/pip/*.conf 2>/dev/null
                printf '%s\n' "${passed_env[@]}") |
              grep -oE '(file://)?/[^ "=]+' | sed 's|^file://||' | cut -d/ -f1-3 | sort -u)

mount --bind "$root" "$root"  # ip netns wants / to be a mount point
mount --make-private "$root"
for path in $local_paths; do
  [ -d "$path" ] && [ ! -e "$root$path" ] || continue
  case $path in /etc/*|/root/*|/usr/*) continue ;; esac
  mkdir -p "$root$path"
  mount --bind "$path" "$root$path"
  mount -o remount,bind,ro "$root$path"
done
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys" 2>/dev/null || { mount --rbind /sys "$root/sys"; mount --make-rslave "$root/sys"; }
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"  # unmounting ours must not reach the host's /dev/pts
mount -t tmpfs -o mode=755 tmpfs "$root/run"

git clone --quiet --no-checkout "$repo" "$root/root/wsinspect"
git -C "$root/root/wsinspect" checkout --quiet --detach "$commit"
echo "rehearse: fresh clone of ${commit:0:12} in $root/root/wsinspect"

# A bash in the clone, as root, with a clean environment.
root_shell=(chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=xterm-256color
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${passed_env[@]}"
  /bin/bash -c)
run_in_root() {  # run_in_root LOG COMMAND: a background job (`wait` gives way to signals)
  setsid "${root_shell[@]}" "cd /root/wsinspect && $2" </dev/null >"$1" 2>&1 &
  wait $!
}

failed=0
echo
echo "== 1. bash install.sh && .venv/bin/wsinspect --mode regular"
first='bash install.sh
echo "-- the app in a terminal for 10 s (a pseudo-terminal from script(1)), then SIGINT"
script -qec "timeout --foreground --preserve-status -s INT 10 .venv/bin/wsinspect --mode regular; echo app exit \$?" /tmp/tui.log >/dev/null
sed -e "s/\x1b\[[0-9;?<>=]*[A-Za-z]//g; s/\x1b[()][A-Z0-9]//g; s/\x1b[=>]//g" /tmp/tui.log | tr -s " " >/tmp/tui.txt
grep -aoE "wsinspect regular 127.0.0.1:8080[^│]*│[^│]*│|The regular proxy listens at [0-9.:]+|app exit [0-9]+" /tmp/tui.txt | sort -u
grep -q "wsinspect regular 127.0.0.1:8080" /tmp/tui.txt && grep -qE "app exit (0|130)" /tmp/tui.txt
echo "-- headless for 10 s"
status=0; timeout 10 .venv/bin/wsinspect --mode regular --headless || status=$?
[ $status = 124 ]  # still running when the timeout stopped it
echo "-- wsinspect demo --headless"
timeout 300 .venv/bin/wsinspect demo --headless'
if run_in_root "$logs/first.log" "set -e; $first"; then
  echo "(ok)"
else
  echo "(FAILED, exit $?)"; failed=1
fi
grep -A 3 '^-- ' "$logs/first.log" | cut -c 1-160  # each check and its first lines
echo "..."
tail -n 5 "$logs/first.log"

echo
echo "== 2. bash tests/run.sh (up to $suite_timeout s)"
if run_in_root "$logs/second.log" "timeout $suite_timeout bash tests/run.sh"; then
  echo "(ok)"
else
  echo "(FAILED, exit $?)"; failed=1
fi
tail -n 25 "$logs/second.log"
exit $failed
