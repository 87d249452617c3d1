#!/usr/bin/env python3
"""Idle keep-alive memory probe for bench/run.sh (stdlib only).

Opens N client connections to a proxy, sends one complete GET on each and reads the whole
response (so every connection is a real, used keep-alive connection), then leaves them all
idle and measures the proxy's resident memory (VmRSS of the given PIDs and all their
descendants, e.g. an nginx master and its workers) before and after.

Prints one JSON object on stdout (and writes it to --out if given):
  conns_requested, conns_open, failed, closed_by_peer, rss_before_kib, rss_after_kib,
  rss_after_close_kib, kib_per_conn, open_seconds
"""

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            print(f"idle_conns: could not raise RLIMIT_NOFILE: {e}", file=sys.stderr)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def descendants(pid):
    """pid and every descendant process (via /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
                except OSError:
                    pass
        except OSError:
            pass
    return out


def rss_kib(pids):
    total = 0
    for root in pids:
        for p in descendants(root):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                pass
    return total


class Conn:
    __slots__ = ("sock", "state", "buf", "need")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"
        self.buf = b""
        self.need = None  # total bytes (head + body) once the head is parsed


def response_complete(c):
    """True once the buffered bytes hold one complete response."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = c.buf[:end].decode("latin-1").lower()
        length = None
        chunked = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
        if chunked:
            c.need = -1
        else:
            c.need = end + 4 + (length or 0)
    if c.need == -1:
        return c.buf.endswith(b"0\r\n\r\n")
    return len(c.buf) >= c.need


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--path", default="/size/100")
    ap.add_argument("--pids", default="", help="comma-separated PIDs whose RSS (with descendants) is measured")
    ap.add_argument("--in-flight", type=int, default=256, help="connections being set up at once")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait before the 'after' RSS reading")
    ap.add_argument("--deadline", type=float, default=120.0, help="give up opening after this many seconds")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("idle_conns: refusing to send load anywhere but loopback")

    soft, hard = raise_nofile()
    if soft < args.conns + 64:
        sys.exit(f"idle_conns: RLIMIT_NOFILE is {soft} (hard {hard}); need {args.conns + 64}")

    pids = [int(p) for p in args.pids.split(",") if p.strip()]
    time.sleep(0.2)
    rss_before = rss_kib(pids)

    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
               "User-Agent: ringway-idle-conns\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    done, failed = [], 0
    started = 0
    active = 0
    t0 = time.monotonic()
    errors = {}

    def fail(c, why):
        nonlocal failed, active
        failed += 1
        active -= 1
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while len(done) + failed < args.conns:
        if time.monotonic() - t0 > args.deadline:
            print(f"idle_conns: deadline reached with {len(done)} open", file=sys.stderr)
            break
        while active < args.in_flight and started < args.conns:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            active += 1
            c = Conn(s)
            err = s.connect_ex((args.host, args.port))
            if err not in (0, errno.EINPROGRESS):
                fail(c, errno.errorcode.get(err, str(err)))
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, errno.errorcode.get(err, str(err)))
                    continue
                try:
                    c.sock.send(request)  # tiny: always fits the send buffer
                except OSError as e:
                    fail(c, type(e).__name__)
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
            else:
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, type(e).__name__)
                    continue
                if not data:
                    fail(c, "eof-before-response")
                    continue
                c.buf += data
                if response_complete(c):
                    if not c.buf.startswith(b"HTTP/1.1 2"):
                        fail(c, "status-" + c.buf[9:12].decode("latin-1", "replace"))
                        continue
                    sel.unregister(c.sock)
                    c.buf = b""
                    done.append(c.sock)
                    active -= 1
    open_seconds = time.monotonic() - t0
    sel.close()

    time.sleep(args.settle)
    rss_after = rss_kib(pids)

    # Any connection the proxy closed meanwhile is readable (EOF): count them.
    closed = 0
    sel = selectors.DefaultSelector()
    for s in done:
        sel.register(s, selectors.EVENT_READ)
    closed = len(sel.select(timeout=0))
    sel.close()
    conns_open = len(done) - closed

    for s in done:
        s.close()
    time.sleep(2.0)
    rss_after_close = rss_kib(pids)

    result = {
        "port": args.port,
        "conns_requested": args.conns,
        "conns_open": conns_open,
        "failed": failed,
        "fail_reasons": errors,
        "closed_by_peer": closed,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_after_close_kib": rss_after_close,
        "kib_per_conn": round((rss_after - rss_before) / conns_open, 3) if conns_open else None,
        "open_seconds": round(open_seconds, 2),
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    return 0 if conns_open else 1


if __name__ == "__main__":
    sys.exit(main())
