#!/usr/bin/env bash
# Installs a built ron .deb on this machine (root) and checks it the way systemd would
# run it: the user, the files and their owners, `systemd-analyze verify` of the unit,
# `ron doctor` as the ron user with the unit's limits, a node started as ron on the
# sample config (loopback ports), a live quota reload by SIGHUP (what ExecReload sends),
# a clean stop, then remove and purge (data and user kept). Bounded: every wait ends.
#   packaging/deb/check.sh target/debian/ron_<version>_<arch>.deb
set -euo pipefail
deb=$1
fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }
step() { printf '  - %s\n' "$*"; }

# As the unit runs it: user ron, LimitMEMLOCK=infinity, LimitNOFILE=1048576 — where
# this machine lets root raise the hard limits (containers often do not; then the
# current limits stand, and `ron doctor` says what they cost).
limits=()
prlimit --memlock=unlimited:unlimited true 2>/dev/null && limits+=(--memlock=unlimited:unlimited)
prlimit --nofile=1048576:1048576 true 2>/dev/null && limits+=(--nofile=1048576:1048576)
as_ron=(prlimit "${limits[@]}" setpriv --reuid=ron --regid=ron --init-groups)

step "install $deb"
dpkg -i "$deb" >/dev/null
getent passwd ron >/dev/null || fail "no ron user"
[ "$(stat -c '%U:%G %a' /etc/ron/ron.toml)" = "root:ron 640" ] || fail "ron.toml owner/mode"
[ "$(stat -c '%U:%G %a' /var/lib/ron)" = "ron:ron 750" ] || fail "/var/lib/ron owner/mode"
/usr/bin/ron --version
depends=$(dpkg-deb -f "$deb" Depends)
case "$depends" in *"libc6 (>= "*) ;; *) fail "Depends names no libc6 version: $depends" ;; esac
[ -f /usr/share/doc/ron/copyright ] || fail "no /usr/share/doc/ron/copyright"
# Enabled through deb-systemd-helper even with no systemd running (an image built in a
# chroot boots with the node enabled).
wants=/etc/systemd/system/multi-user.target.wants/ron.service
[ -L "$wants" ] || fail "ron.service not enabled (no $wants)"
[ -f /usr/share/ron/prometheus/ron-alerts.yml ] || fail "alert rules not installed"

if command -v systemd-analyze >/dev/null; then
  step "systemd-analyze verify ron.service"
  systemd-analyze verify /usr/lib/systemd/system/ron.service
fi

# On a host where systemd runs, the install started the unit (postinst): it must be up,
# and is stopped so that the node started below as ron has the ports and the data dir.
if [ -d /run/systemd/system ]; then
  step "the install started ron.service (systemd runs here); stopped for the checks below"
  for _ in $(seq 1 150); do systemctl is-active --quiet ron.service && break; sleep 0.2; done
  systemctl is-active --quiet ron.service || fail "postinst did not start ron.service"
  systemctl stop ron.service
fi

step "ron doctor as root, checked as ron.service runs the node (--unit)"
/usr/bin/ron doctor --config /etc/ron/ron.toml --unit ron.service >/dev/null \
  || { /usr/bin/ron doctor --config /etc/ron/ron.toml --unit ron.service; fail "ron doctor --unit"; }

step "ron doctor as ron with the unit's limits"
"${as_ron[@]}" /usr/bin/ron doctor --config /etc/ron/ron.toml

step "a node as ron on the sample config"
log=$(mktemp)
"${as_ron[@]}" /usr/bin/ron serve --config /etc/ron/ron.toml >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -fs http://127.0.0.1:9600/readyz >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "node exited"; }
  sleep 0.1
done
curl -fs http://127.0.0.1:9600/readyz >/dev/null || { cat "$log"; fail "not ready in 30 s"; }
head -c 100000 /dev/urandom >"$log.obj"
obj=$(curl -fs -T "$log.obj" http://127.0.0.1:8080/o | sed 's/.*"obj":"\([^"]*\)".*/\1/')
curl -fs "http://127.0.0.1:8080/o/$obj" | cmp - "$log.obj" || fail "read back differs"
ls /var/lib/ron/stores >/dev/null || fail "no stores in /var/lib/ron"

step "live quota reload by SIGHUP (ExecReload)"
cp /etc/ron/ron.toml "$log.toml"
trap 'cp "$log.toml" /etc/ron/ron.toml; kill "$pid" 2>/dev/null || true' EXIT
printf '\n[quota_default]\nrequests_per_s = 1.0\nrequests_burst = 1.0\n' >>/etc/ron/ron.toml
kill -HUP "$pid"
limited=""
for _ in $(seq 1 50); do
  codes=$(for _ in 1 2 3; do curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:8080/o/$obj"; done)
  case "$codes" in *429*) limited=yes; break ;; esac
  sleep 0.1
done
cp "$log.toml" /etc/ron/ron.toml
[ -n "$limited" ] || { cat "$log"; fail "quota not applied after SIGHUP"; }

step "SIGTERM stops it cleanly"
kill -TERM "$pid"
for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "still running 30 s after SIGTERM"
wait "$pid" || fail "exit status $?"
trap - EXIT
rm -f "$log" "$log.obj" "$log.toml"

step "remove and purge keep the data and the user"
dpkg -r ron >/dev/null
[ ! -e /usr/bin/ron ] || fail "/usr/bin/ron left after remove"
[ -f /etc/ron/ron.toml ] || fail "conffile removed before purge"
dpkg --purge ron >/dev/null
[ ! -e "$wants" ] && [ ! -L "$wants" ] || fail "purge left $wants behind"
[ ! -e /etc/systemd/system/ron.service ] || fail "purge left a mask of ron.service"
[ -d /var/lib/ron/stores ] || fail "data removed"
getent passwd ron >/dev/null || fail "user removed"
echo "check.sh: ok"
