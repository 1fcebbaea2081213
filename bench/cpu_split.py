#!/usr/bin/env python3
"""Where one CPU's time goes per request, from `perf script` of a system-wide profile.

    perf script -i perf.data -F comm,ip,sym,dso | python3 bench/cpu_split.py \
        --server nginx --hz 1999 --requests 123456 --label "nginx get_4KiB"

Used by `PROFILE=1 bash bench/compare.sh`: the server's CPU (CPU 0) is sampled with
`perf record -C 0 -e cpu-clock -g` while one tool loads it, and every sample is put in
one bucket by its call chain (first match in the order below), then divided by the
requests answered in the window: microseconds of that core per request, by bucket.

Buckets (kernel function names as in Linux 6.x):
  loopback delivery  the receiving side of loopback TCP run on the sender's core:
                     net_rx_action / process_backlog / __netif_receive_skb under the
                     server's own transmit (the client's receive work, billed here)
  send               building and sending the answer: tcp_sendmsg, sendfile/splice,
                     tcp_write_xmit, io_uring send, writev
  receive            reading requests: tcp_recvmsg, sock_read_iter, io_uring recv
  event loop         waiting and waking: epoll, io_uring submit/wait, schedule
  other kernel       syscall entry/exit, timers, memory, files, the rest
  server user space  the server process's own code and its libraries
  other processes    anything else that ran on the core
  idle               the core had nothing to do
"""

import argparse
import sys

BUCKETS = [
    ("loopback delivery", ("net_rx_action", "process_backlog", "__netif_receive_skb")),
    (
        "send",
        (
            "tcp_sendmsg",
            "do_splice_direct",
            "splice_to_socket",
            "__x64_sys_sendfile64",
            "tcp_write_xmit",
            "do_writev",
            "io_send",
            "io_sendmsg",
            "io_write",
        ),
    ),
    ("receive", ("tcp_recvmsg", "sock_read_iter", "io_recv", "io_recvmsg", "io_read")),
    (
        "event loop",
        (
            "ep_poll",
            "do_epoll_wait",
            "io_submit_sqes",
            "io_cqring_wait",
            "__schedule",
            "io_uring_enter",
            "__x64_sys_io_uring_enter",
        ),
    ),
]
ORDER = [b for b, _ in BUCKETS] + [
    "other kernel",
    "server user space",
    "other processes",
    "idle",
]
IDLE = ("do_idle", "cpu_startup_entry", "default_idle", "pv_native_safe_halt")


def samples(stream):
    """Yields (comm, [(sym, dso), ...] leaf first) per sample of `perf script`."""
    comm, frames = None, []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif not line[0].isspace():
            comm, frames = line.split()[0], []
        else:
            parts = line.split(None, 1)
            rest = parts[1] if len(parts) > 1 else ""
            dso = rest[rest.rfind("(") + 1 : -1] if rest.endswith(")") else ""
            sym = rest[: rest.rfind("(")].strip() if "(" in rest else rest
            frames.append((sym.split("+")[0], dso))
    if comm is not None:
        yield comm, frames


def bucket(comm, frames, server):
    syms = [s for s, _ in frames]
    if comm == "swapper" or any(s in IDLE for s in syms):
        return "idle"
    if not comm.startswith(server):
        return "other processes"
    for name, marks in BUCKETS:
        if any(s in marks for s in syms):
            return name
    leaf_dso = frames[0][1] if frames else ""
    if "kernel" in leaf_dso:
        return "other kernel"
    return "server user space"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="the server's process name prefix")
    p.add_argument("--hz", type=float, required=True, help="perf record -F")
    p.add_argument("--requests", type=float, required=True, help="answered in the window")
    p.add_argument("--label", default="")
    a = p.parse_args()
    counts = {b: 0 for b in ORDER}
    for comm, frames in samples(sys.stdin):
        counts[bucket(comm, frames, a.server)] += 1
    total = sum(counts.values())
    if total == 0 or a.requests <= 0:
        sys.exit("no samples or no requests")
    us = {b: counts[b] / a.hz / a.requests * 1e6 for b in ORDER}
    busy = sum(us[b] for b in ORDER if b != "idle")
    print(f"{a.label}: {busy:.2f} us of the core per request ({total} samples)")
    for b in ORDER:
        print(f"  {b:<18} {us[b]:8.2f} us  {counts[b] / total * 100:5.1f} %")


if __name__ == "__main__":
    main()
