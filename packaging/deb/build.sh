#!/usr/bin/env bash
# Builds target/debian/ron_<version>_<arch>.deb: the binary, the systemd unit, the sample
# /etc/ron/ron.toml (a conffile), the sysusers entry and the docs, with maintainer scripts
# that create the ron user and enable the service. Needs only dpkg-deb (no cargo-deb).
#   packaging/deb/build.sh                 # builds the release binary first if needed
#   RON_BIN=target/debug/ron packaging/deb/build.sh   # package another build (CI)
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${RON_BIN:-target/release/ron}
[ -x "$bin" ] || cargo build --release --locked -p ron-engine
version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
out=target/debian/ron_${version}_${arch}.deb
stage=target/debian/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" target/debian

install -D -m 0755 "$bin" "$stage/usr/bin/ron"
install -D -m 0644 packaging/ron.service "$stage/usr/lib/systemd/system/ron.service"
install -D -m 0644 packaging/ron.toml "$stage/etc/ron/ron.toml"
install -D -m 0644 packaging/deb/sysusers.conf "$stage/usr/lib/sysusers.d/ron.conf"
# Alert rules (with their promtool tests) and a Grafana dashboard, for the operator to
# load into their Prometheus and Grafana.
for file in prometheus/ron-alerts.yml prometheus/ron-alerts.test.yml grafana/ron-dashboard.json; do
  install -D -m 0644 "packaging/$file" "$stage/usr/share/ron/$file"
done
for doc in README.md docs/OPERATIONS.md docs/HTTP-API.md docs/OAP-1.md; do
  install -D -m 0644 "$doc" "$stage/usr/share/doc/ron/$(basename "$doc")"
done
install -D -m 0644 packaging/deb/copyright "$stage/usr/share/doc/ron/copyright"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"
echo /etc/ron/ron.toml >"$stage/DEBIAN/conffiles"

# The C libraries the binary links: libc6 at the newest symbol version it uses (a
# package that installed on an older glibc failed every start in the loader), and
# libgcc-s1 for unwinding.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
[ -n "$glibc" ] || { echo "build.sh: no GLIBC_ symbol version in $bin" >&2; exit 1; }
depends="libc6 (>= $glibc), libgcc-s1, passwd, init-system-helpers (>= 1.54~)"

cat >"$stage/DEBIAN/control" <<CONTROL
Package: ron
Version: $version
Architecture: $arch
Maintainer: RustyOnions <ron@example.invalid>
Section: net
Priority: optional
Depends: $depends
Installed-Size: $(du -sk "$stage" | cut -f1)
Homepage: https://example.invalid/rustyonions/ron
Description: RustyOnions data-plane node
 Stores and serves immutable objects addressed by their BLAKE3-256 hash over
 HTTP/1.1 and OAP/1, plain or TLS, one io_uring shard per core, and sends only
 bytes verified against the address. Runs as the ron user with data in
 /var/lib/ron (systemd unit ron.service, config /etc/ron/ron.toml).
CONTROL

dpkg-deb --root-owner-group --build "$stage" "$out" >/dev/null
echo "$out"
