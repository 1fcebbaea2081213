#!/usr/bin/env bash
# Boots the package's unit under a real systemd: a Debian rootfs (debootstrap, cached
# in $ROOTFS) booted with systemd-nspawn -b, systemd 252 as PID 1. The package is
# installed the way images are built — in a chroot, no systemd running — and the
# container then boots with the node enabled and started; then PUT/GET, `systemctl
# reload` applying a quota, a p2p listener on 0.0.0.0, an upgrade of the running node
# (restarted), `systemctl stop`, a refused configuration (not restarted), a node that
# cannot start (start limit hit), an upgrade over a stopped node (stays stopped) and
# with the conffile deleted, and a purge that leaves no unit link.
#   packaging/deb/nspawn-check.sh target/debian/ron_<version>_<arch>.deb
# Needs root, debootstrap and systemd-container (apt-get install debootstrap
# systemd-container), and the Debian mirror (a package registry). Bounded: every wait
# ends; the container is stopped by the PID this script started.
set -euo pipefail
deb=$(realpath "$1")
ROOTFS=${ROOTFS:-/var/tmp/ron-nspawn-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
fail() { echo "nspawn-check.sh: FAIL: $*" >&2; exit 1; }
step() { printf '  - %s\n' "$*"; }

if [ ! -x "$ROOTFS/lib/systemd/systemd" ]; then
  step "debootstrap bookworm into $ROOTFS (once; reused after)"
  rm -rf "$ROOTFS.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates,init-system-helpers \
    bookworm "$ROOTFS.tmp" "$MIRROR" >/dev/null
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
root=$(mktemp -d /var/tmp/ron-nspawn.XXXXXX)
cp -a "$ROOTFS/." "$root/"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$root" "$root.log" "$root.doctor"
}
trap cleanup EXIT

step "install the package in a chroot (no systemd running), as image builders do"
cp "$deb" "$root/tmp/ron.deb"
chroot "$root" dpkg -i /tmp/ron.deb >/dev/null
[ -L "$root/etc/systemd/system/multi-user.target.wants/ron.service" ] \
  || fail "the chroot install did not enable ron.service"

step "boot it: systemd-nspawn -b"
systemd-nspawn -q -D "$root" -b --register=no --keep-unit --private-network \
  >"$root.log" 2>&1 &
pid=$!
leader=""
for _ in $(seq 1 100); do
  leader=$(pgrep -P "$pid" | head -n1 || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || fail "no container PID 1"
inside() { nsenter -t "$leader" -a "$@"; }
state=""
for _ in $(seq 1 300); do
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.2
done
case "$state" in running | degraded) ;; *) fail "systemd not up: $state" ;; esac
echo "    systemd $(inside systemctl --version | head -n1 | awk '{print $2}'), system $state"

step "ron.service started at boot and ready"
for _ in $(seq 1 150); do
  inside curl -fs http://127.0.0.1:9600/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
inside systemctl is-active --quiet ron.service || { inside journalctl -u ron --no-pager | tail -20; fail "ron.service not active"; }
inside curl -fs http://127.0.0.1:9600/readyz >/dev/null || fail "not ready"

step "ron doctor as root, checked as the unit runs the node"
inside ron doctor --config /etc/ron/ron.toml --unit ron.service >"$root.doctor" \
  || { cat "$root.doctor"; fail "ron doctor --unit"; }
grep -q "User=ron, LimitMEMLOCK=infinity, LimitNOFILE=1048576" "$root.doctor" \
  || { cat "$root.doctor"; fail "the doctor did not read the unit"; }

step "PUT and GET inside the container"
inside sh -c 'head -c 300000 /dev/urandom >/tmp/obj'
obj=$(inside curl -fs -T /tmp/obj http://127.0.0.1:8080/o | sed 's/.*"obj":"\([^"]*\)".*/\1/')
inside sh -c "curl -fs http://127.0.0.1:8080/o/$obj | cmp - /tmp/obj" || fail "read back differs"

step "systemctl reload applies a quota"
inside sh -c 'printf "\n[quota_default]\nrequests_per_s = 1.0\nrequests_burst = 1.0\n" >>/etc/ron/ron.toml'
inside systemctl reload ron.service || {
  inside journalctl -u ron.service --no-pager | tail -20
  fail "systemctl reload ron.service"
}
limited=""
for _ in $(seq 1 50); do
  codes=$(inside sh -c "for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:8080/o/$obj; done")
  case "$codes" in *429*) limited=yes; break ;; esac
  sleep 0.2
done
[ -n "$limited" ] || fail "no 429 after systemctl reload"

step "a p2p listener on 0.0.0.0 starts under the unit's sandbox (it watches interfaces over netlink)"
inside sh -c 'printf "p2p = \"0.0.0.0:4001\"\n" | cat - /etc/ron/ron.toml >/tmp/ron.toml && cat /tmp/ron.toml >/etc/ron/ron.toml'
inside systemctl restart ron.service || {
  inside journalctl -u ron.service --no-pager | tail -20
  fail "restart with p2p on 0.0.0.0"
}
inside curl -fs http://127.0.0.1:9600/readyz >/dev/null || fail "not ready with p2p on 0.0.0.0"

step "an upgrade of a running node restarts it on the new binary"
cp "$deb" "$root/root/ron.deb"
before=$(inside systemctl show -p MainPID --value ron.service)
inside dpkg -i /root/ron.deb >/dev/null || fail "reinstall over a running node"
after=$(inside systemctl show -p MainPID --value ron.service)
[ "$after" != "$before" ] && [ "$after" != 0 ] || fail "not restarted by the upgrade (MainPID $before -> $after)"
for _ in $(seq 1 150); do
  inside curl -fs http://127.0.0.1:9600/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
inside curl -fs http://127.0.0.1:9600/readyz >/dev/null || fail "not ready after the upgrade"

step "systemctl stop"
inside systemctl stop ron.service
[ "$(inside systemctl is-active ron.service || true)" = inactive ] || fail "still active after stop"

step "a configuration the node refuses (exit 2) is not restarted"
inside cp /etc/ron/ron.toml /root/ron.toml.good
inside sh -c 'printf "no_such_key = 1\n" >>/etc/ron/ron.toml'
inside systemctl start ron.service 2>/dev/null && fail "started with a bad key"
sleep 3
[ "$(inside systemctl show -p NRestarts --value ron.service)" = 0 ] || fail "a refused configuration was restarted"
[ "$(inside systemctl is-active ron.service || true)" = failed ] || fail "not failed after a refused configuration"
inside systemctl reset-failed ron.service

step "a node that cannot start is left failed after five tries, not restarted for good"
# /srv is read-only under ProtectSystem=strict: preflight refuses the data dir (exit 1).
inside sh -c 'sed "s|^data_dirs = .*|data_dirs = [\"/srv/ron\"]|" /root/ron.toml.good >/etc/ron/ron.toml'
inside mkdir -p /srv/ron
inside systemctl start ron.service 2>/dev/null || true
# systemd 252 keeps the last run's Result (exit-code) and logs the limit.
limited=""
for waited in $(seq 1 450); do
  inside journalctl -u ron.service --no-pager | grep -q "Start request repeated too quickly" && { limited=yes; break; }
  sleep 0.2
done
[ -n "$limited" ] || {
  inside journalctl -u ron.service --no-pager | tail -20
  fail "no start limit within 90 s (NRestarts=$(inside systemctl show -p NRestarts --value ron.service))"
}
restarts=$(inside systemctl show -p NRestarts --value ron.service)
sleep 5
[ "$(inside systemctl show -p NRestarts --value ron.service)" = "$restarts" ] || fail "restarted past the start limit"
[ "$(inside systemctl is-active ron.service || true)" = failed ] || fail "not failed at the start limit"
echo "    start limit hit after ~$((waited / 5)) s and $restarts restarts; none since"
inside cp /root/ron.toml.good /etc/ron/ron.toml
inside systemctl reset-failed ron.service

step "an upgrade leaves a stopped node stopped, and succeeds with the conffile deleted"
inside dpkg -i /root/ron.deb >/dev/null || fail "reinstall over a stopped node"
[ "$(inside systemctl is-active ron.service || true)" = inactive ] || fail "the upgrade started a stopped node"
inside rm /etc/ron/ron.toml
inside dpkg -i /root/ron.deb >/dev/null || fail "reinstall with /etc/ron/ron.toml deleted"

step "purge: no unit link left, data kept"
inside dpkg --purge ron >/dev/null
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/ron.service" ] || fail "wants link left"
[ -d "$root/var/lib/ron/stores" ] || fail "data removed"
inside systemctl poweroff >/dev/null 2>&1 || true
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
echo "nspawn-check.sh: ok"
