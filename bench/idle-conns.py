#!/usr/bin/env python3
"""Hold N idle TCP connections to HOST:PORT: connected, nothing sent.

Used by bench/http (scenario 5). Any connection the server closes (or that
fails to connect) is reopened, at most --rate per second so that a server
dropping them does not turn this into a CPU-eating connect loop. Prints
"connected N" once all N are open at the same time (or "not all connected"
after --ready-timeout), then, on SIGTERM/SIGINT or after --max-seconds, one
line "idle-stats avg=A min=B max=C closed_by_server=D connect_failed=E" over the samples taken since
the last SIGUSR1 (or since start). Only ever connects to the given address.
"""
import argparse
import errno
import selectors
import signal
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("-n", type=int, default=10000, help="connections to keep open")
    ap.add_argument("--rate", type=int, default=2000, help="max (re)connects per second")
    ap.add_argument("--ready-timeout", type=float, default=30)
    ap.add_argument("--max-seconds", type=float, default=600, help="stop by itself after this")
    a = ap.parse_args()

    sel = selectors.DefaultSelector()
    state = {}  # socket -> "connecting" | "open"
    stop = []
    samples = []
    n_open = closed = failed = 0
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: samples.clear())

    def drop(s):
        nonlocal n_open
        if state.pop(s) == "open":
            n_open -= 1
        sel.unregister(s)
        s.close()

    start = time.monotonic()
    ready_said = False
    budget, last_tick, last_sample = 0.0, start, start
    while not stop and time.monotonic() - start < a.max_seconds:
        now = time.monotonic()
        # Token bucket for new connects, refilled at --rate per second.
        budget = min(a.rate, budget + (now - last_tick) * a.rate)
        last_tick = now
        while len(state) < a.n and budget >= 1:
            budget -= 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((a.host, a.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            state[s] = "connecting"
            sel.register(s, selectors.EVENT_WRITE)
        for key, ev in sel.select(timeout=0.05):
            s = key.fileobj
            if state[s] == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    drop(s)
                    failed += 1
                    continue
                state[s] = "open"
                n_open += 1
                sel.modify(s, selectors.EVENT_READ)
                continue
            # Readable while idle: the server closed it (or sent an error).
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                drop(s)
                closed += 1
        if not ready_said and (n_open >= a.n or now - start > a.ready_timeout):
            print(f"connected {n_open}" if n_open >= a.n else f"not all connected: {n_open}", flush=True)
            ready_said = True
        if now - last_sample >= 0.25:
            samples.append(n_open)
            last_sample = now
    s = samples or [0]
    print(f"idle-stats avg={sum(s) / len(s):.0f} min={min(s)} max={max(s)} closed_by_server={closed} connect_failed={failed}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
