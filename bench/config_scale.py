#!/usr/bin/env python3
"""What a large declarative config costs: ringway with N consumers, each with a JWT
credential, in its file (as a Kong export of a busy deployment has them).

usage: bench/config_scale.py [--consumers N[,N...]] [--writes K] [--no-build] [--bin PATH]

For each N: `ringway check` (wall time, peak RSS), the gateway's start (until its Admin
API answers) and its RSS once started, then K Admin API writes (a consumer, then its
credential, in turn) with the latency of each and the RSS after them. Every process it
starts is stopped; the scratch directory is removed. Prints a Markdown table and writes
bench/results/config-scale.json.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ringway")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, consumers, data_dir):
    with open(path, "w") as f:
        f.write('_format_version: "3.0"\n')
        f.write(f"ringway:\n  data_dir: {data_dir}\n")
        f.write("services:\n- name: origin\n  url: http://127.0.0.1:9\n")
        f.write("  routes:\n  - name: all\n    paths: [/]\n    plugins:\n    - name: jwt\n")
        f.write("consumers:\n")
        for i in range(consumers):
            f.write(
                f"- username: user-{i}\n  custom_id: customer-{i}\n"
                f"  jwt_secrets:\n  - key: key-{i}\n"
                f"    secret: s3cret-{i:08d}-0123456789abcdef\n"
            )


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def post(url, fields):
    data = urllib.parse.urlencode(fields).encode()
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, data=data, timeout=60) as answer:
            status = answer.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, (time.perf_counter() - started) * 1000


def wait_up(url, deadline, process):
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.01)
    return False


def measure(consumers, writes, scratch):
    data_dir = os.path.join(scratch, f"data-{consumers}")
    os.makedirs(data_dir)
    config = os.path.join(scratch, f"kong-{consumers}.yaml")
    write_config(config, consumers, data_dir)
    row = {"consumers": consumers, "file_bytes": os.path.getsize(config)}

    # This one child's peak RSS (wait4), not the largest of all children so far.
    started = time.perf_counter()
    check = subprocess.Popen([BIN, "check", "-c", config],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = check.stderr.read()
    _, status, usage = os.wait4(check.pid, 0)
    check.returncode = os.waitstatus_to_exitcode(status)
    row["check_s"] = round(time.perf_counter() - started, 3)
    if check.returncode != 0:
        raise SystemExit(f"config_scale: ringway check failed: {errors.decode(errors='replace')}")
    row["check_peak_rss_kib"] = usage.ru_maxrss

    proxy, admin = free_port(), free_port()
    log_path = os.path.join(scratch, f"gateway-{consumers}.log")
    log = open(log_path, "wb")
    started = time.perf_counter()
    gateway = subprocess.Popen(
        [BIN, "run", "-c", config, "--proxy-listen", f"127.0.0.1:{proxy}",
         "--admin-listen", f"127.0.0.1:{admin}", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=log)

    def fail(why):
        with open(log_path, "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace")
        raise SystemExit(f"config_scale: {why}; the gateway's log ends:\n{tail}")

    try:
        base = f"http://127.0.0.1:{admin}"
        if not wait_up(f"{base}/status", time.monotonic() + 120, gateway):
            fail("the gateway did not start within 120 s")
        row["start_s"] = round(time.perf_counter() - started, 3)
        time.sleep(1)
        row["rss_started_kib"] = rss_kib(gateway.pid)
        latencies = {"consumer": [], "credential": []}
        for i in range(writes):
            name = f"added-{i // 2}"
            if i % 2 == 0:
                status, ms = post(f"{base}/consumers", {"username": name})
                kind = "consumer"
            else:
                status, ms = post(f"{base}/consumers/{name}/jwt", {"key": f"added-key-{i}"})
                kind = "credential"
            if status != 201:
                fail(f"Admin API write {i} answered {status}")
            latencies[kind].append(ms)
        every = latencies["consumer"] + latencies["credential"]
        row["write_ms_p50"] = round(statistics.median(every), 1)
        row["write_ms_max"] = round(max(every), 1)
        row["write_ms"] = {k: [round(v, 1) for v in vs] for k, vs in latencies.items()}
        time.sleep(1)
        row["rss_after_writes_kib"] = rss_kib(gateway.pid)
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=40)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
        log.close()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", default="1000,5000,20000",
                        help="comma-separated consumer counts (default 1000,5000,20000)")
    parser.add_argument("--writes", type=int, default=10, help="Admin API writes per count")
    parser.add_argument("--no-build", action="store_true", help="use the existing release build")
    parser.add_argument("--bin", help="measure this ringway binary instead (implies --no-build)")
    args = parser.parse_args()
    global BIN
    if args.bin:
        BIN, args.no_build = os.path.abspath(args.bin), True
    try:
        counts = [int(n) for n in args.consumers.split(",")]
    except ValueError:
        parser.error("--consumers takes whole numbers separated by commas")
    if any(n < 0 or n > 1_000_000 for n in counts) or not 1 <= args.writes <= 1000:
        parser.error("--consumers each 0..1000000, --writes 1..1000")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)

    scratch = tempfile.mkdtemp(prefix="ringway-config-scale.")
    # A SIGTERM ends the run as an exception would: the gateway stopped, scratch removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows = [measure(n, args.writes, scratch) for n in counts]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    machine = {"cpus": os.cpu_count(), "kernel": os.uname().release, "arch": os.uname().machine}
    version = subprocess.run([BIN, "version"], capture_output=True, text=True).stdout
    driver = next((line.split(":", 1)[1].strip() for line in version.splitlines()
                   if line.startswith("driver:")), "?")
    print(f"\nconfig scale at {commit} ({machine['cpus']} CPUs, kernel {machine['kernel']}, "
          f"{machine['arch']}, driver {driver}), {args.writes} Admin API writes each\n")
    print("| consumers | file | check | check peak RSS | start | RSS started | write p50 | write max | RSS after writes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['consumers']:,} | {r['file_bytes'] / 1048576:.1f} MiB | {r['check_s']:.2f} s "
              f"| {r['check_peak_rss_kib'] / 1024:.0f} MiB | {r['start_s']:.2f} s "
              f"| {r['rss_started_kib'] / 1024:.0f} MiB | {r['write_ms_p50']:.0f} ms "
              f"| {r['write_ms_max']:.0f} ms | {r['rss_after_writes_kib'] / 1024:.0f} MiB |")
    out = os.path.join(ROOT, "bench", "results", "config-scale.json")
    with open(out, "w") as f:
        json.dump({"commit": commit, "machine": machine, "driver": driver,
                   "writes": args.writes, "rows": rows}, f, indent=1)
    print(f"\nwrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
