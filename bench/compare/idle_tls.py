#!/usr/bin/env python3
"""Memory per idle TLS connection, for bench/compare.sh.

Opens COUNT TLS connections to 127.0.0.1:PORT (handshake completed and the certificate verified against CAFILE,
no request sent), waits SETTLE seconds, and reports (RSS after - RSS before) / COUNT in KiB, where RSS is the
sum of VmRSS from /proc/PID/status over the server's processes: --pid PID (the process itself) and/or
--children-of PID (its children, e.g. nginx's workers under its master). A few connections are opened and closed
first (--warm) so that one-time set-up (TLS context, first buffers) is not counted per connection.

Loopback only, standard library only, bounded: every socket has a timeout and the whole run a deadline.
Prints one line: IDLE opened=N before_kib=B after_kib=A per_conn_kib=X pids=...
"""
import argparse
import os
import resource
import signal
import socket
import ssl
import sys
import time

HOST = "127.0.0.1"


def children_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces or parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == parent:
            found.append(int(entry))
    return sorted(found)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def connect(context: ssl.SSLContext, port: int, timeout: float) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname=HOST)  # handshake happens here (do_handshake_on_connect)
    except BaseException:
        raw.close()
        raise
    return tls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--pid", type=int, action="append", default=[])
    parser.add_argument("--children-of", type=int, action="append", default=[])
    parser.add_argument("--warm", type=int, default=16)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="per socket operation")
    parser.add_argument("--deadline", type=int, default=120, help="whole run, seconds")
    args = parser.parse_args()
    if not 1 <= args.count <= 20000:
        parser.error("--count must be 1..20000")

    def expired(*_):
        print(f"IDLE error=deadline of {args.deadline}s reached", flush=True)
        os._exit(2)

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(args.deadline)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + args.warm + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))

    pids = list(args.pid)
    for parent in args.children_of:
        pids += children_of(parent)
    if not pids:
        print("IDLE error=no server process to measure", flush=True)
        return 2

    context = ssl.create_default_context(cafile=args.cafile)
    context.check_hostname = True

    warm = [connect(context, args.port, args.timeout) for _ in range(args.warm)]
    for s in warm:
        s.close()
    time.sleep(args.settle)
    before = rss_kib(pids)

    sockets = []
    error = None
    started = time.monotonic()
    try:
        for _ in range(args.count):
            sockets.append(connect(context, args.port, args.timeout))
    except (OSError, ssl.SSLError) as e:
        error = f"{type(e).__name__}: {e}"
    handshake_seconds = time.monotonic() - started
    time.sleep(args.settle)
    # Still open? A server that dropped idle connections would make the number meaningless.
    alive = 0
    for s in sockets:
        try:
            s.setblocking(False)
            data = s.recv(1)
            # b"" = closed by the server; data = unexpected bytes
            if data:
                alive += 1
        except ssl.SSLWantReadError:
            alive += 1
        except (BlockingIOError, InterruptedError):
            alive += 1
        except (OSError, ssl.SSLError):
            pass
    after = rss_kib(pids)
    for s in sockets:
        try:
            s.close()
        except OSError:
            pass
    opened = len(sockets)
    per = (after - before) / opened if opened else float("nan")
    line = (f"IDLE opened={opened} alive={alive} before_kib={before} after_kib={after} per_conn_kib={per:.1f} "
            f"handshakes_s={handshake_seconds:.2f} pids={','.join(map(str, pids))}")
    if error:
        line += f" error={error!r}"
    print(line, flush=True)
    return 0 if opened == args.count and alive == opened and not error else 1


if __name__ == "__main__":
    sys.exit(main())
