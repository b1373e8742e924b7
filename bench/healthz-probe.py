#!/usr/bin/env python3
"""Probe http://HOST:PORT/healthz the way a health checker does: one request
every --interval seconds on a fresh connection, for --seconds, and print one
line "HEALTHZ n=N p50_us=A p99_us=B bad=C" (latency from connect to the
whole response; bad = errors, timeouts and non-200 answers).

Used by bench/http (scenario 7). A paced probe, unlike a second wrk, does not
load the server it measures (wrk on one connection makes tens of thousands of
requests a second, and a server that answers faster is loaded more).
Only ever connects to the given address.
"""
import argparse
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=5)
    a = ap.parse_args()
    req = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    lat, bad = [], 0
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with socket.create_connection((a.host, a.port), timeout=a.timeout) as s:
                s.sendall(req)
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                lat.append(time.monotonic() - t0)
            else:
                bad += 1
        except OSError:
            bad += 1
        rest = a.interval - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)
    lat.sort()
    pick = lambda q: int(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6) if lat else 0
    print(f"HEALTHZ n={len(lat)} p50_us={pick(0.50)} p99_us={pick(0.99)} bad={bad}")


if __name__ == "__main__":
    main()
