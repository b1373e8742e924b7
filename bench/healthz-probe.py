#!/usr/bin/env python3
"""Probe http://HOST:PORT/healthz the way a health checker does: one request
every --interval seconds on a fresh connection, for --seconds, and print one
line "HEALTHZ n=N due=D p50_us=A p99_us=B max_us=M bad=C" (latency from
connect to the whole response; due = probes scheduled; bad = errors,
timeouts and non-200 answers).

By default a probe starts when the previous one has ended (bench/http,
scenario 7). With --schedule each probe starts at its own time on a thread
of its own, as a watchdog's timer does, so a server that stalls for two
seconds shows as every probe due in those two seconds answered late (or not
within --timeout), not as one slow sample (bench/cold).

A paced probe, unlike a second wrk, does not load the server it measures.
Only ever connects to the given address.
"""
import argparse
import signal
import socket
import threading
import time


def probe(host, port, timeout):
    """One probe: its latency in seconds, or None if it failed."""
    req = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(max(0.001, timeout - (time.monotonic() - t0)))
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                if time.monotonic() - t0 > timeout:
                    return None
        if data.startswith(b"HTTP/1.1 200"):
            return time.monotonic() - t0
    except OSError:
        pass
    return None


def probe_loop(a, one, threads):
    """Starts probes until --seconds have passed; returns how many were due."""
    start = time.monotonic()
    due = 0
    while time.monotonic() < start + a.seconds:
        if a.schedule:
            rest = start + due * a.interval - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            t = threading.Thread(target=one)
            t.start()
            threads.append(t)
        else:
            t0 = time.monotonic()
            one()
            rest = a.interval - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
        due += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--schedule", action="store_true",
                    help="start each probe at its own time, on its own thread")
    a = ap.parse_args()
    results, lock, threads = [], threading.Lock(), []

    def one():
        r = probe(a.host, a.port, a.timeout)
        with lock:
            results.append(r)

    def stop(*_):
        raise KeyboardInterrupt

    # SIGTERM ends the probing early (bench/cold): report what ran. (A
    # background job's SIGINT is ignored, so that signal cannot be used.)
    signal.signal(signal.SIGTERM, stop)
    try:
        probe_loop(a, one, threads)
    except KeyboardInterrupt:
        pass
    for t in threads:
        t.join()
    due = len(results)
    lat = sorted(r for r in results if r is not None)
    bad = due - len(lat)
    # A failed probe counts as the slowest in the percentiles: a probe that
    # never answered must not improve p99 by leaving the sample.
    both = lat + [a.timeout] * bad
    pick = lambda q: int(both[min(len(both) - 1, int(q * len(both)))] * 1e6) if both else 0
    mx = int(max(lat) * 1e6) if lat else 0
    print(f"HEALTHZ n={len(lat)} due={due} p50_us={pick(0.50)} p99_us={pick(0.99)} "
          f"max_us={mx} bad={bad}")


if __name__ == "__main__":
    main()
