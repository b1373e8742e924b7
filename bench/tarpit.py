#!/usr/bin/env python3
"""Tarpit benchmark: how long `phase-discover --release-key --fetch-all`
takes with one genuine provider, and with a tarpit provider of the same
signed release tried first (its record is newer), for three kinds of tarpit:
artifact bodies trickled a byte at a time after the real manifest, a server
that accepts TCP and never answers, and a manifest trickled a byte at a time.
Beside them, what curl (its defaults) does with the tarpit's artifact URL.

Prints a Markdown table. Everything runs on 127.0.0.1. Run by bench/tarpit,
which builds the binaries; usage: bench/tarpit.py PLASMD PHASE_DISCOVER
Environment: SIZE_MIB (artifact bytes in all, default 96), WINDOW (the
client's --rate-window, default 10), REPEATS (genuine-only runs, default 3),
CAP (seconds any one run may take before the bench stops it, default 120).
"""
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PLASMD, DISCOVER = sys.argv[1], sys.argv[2]
SIZE_MIB = int(os.environ.get("SIZE_MIB", "96"))
WINDOW_ENV = os.environ.get("WINDOW", "10")
WINDOW = 10 if WINDOW_ENV == "none" else int(WINDOW_ENV)
REPEATS = int(os.environ.get("REPEATS", "3"))
CAP = int(os.environ.get("CAP", "120"))
# WINDOW=none runs a phase-discover from before --rate-window (issue 18),
# for the figures of the code before it.
RATE_ARGS = [] if WINDOW_ENV == "none" else ["--rate-window", WINDOW_ENV]
procs = []


def start(args, log):
    """Starts a plasmd process logging to `log`; waits for its p2p address."""
    f = open(log, "w+")
    p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, text=True)
    procs.append(p)
    return p, f


def wait_for(f, needle, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        f.seek(0)
        for line in f.read().splitlines():
            if needle in line:
                return line.split(needle, 1)[1].strip()
        time.sleep(0.1)
    raise SystemExit(f"bench/tarpit: no {needle!r} in {f.name}")


def tarpit(release, mode, stop):
    """A tarpit server on 127.0.0.1 until `stop` is set; returns its port."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def answer(conn):
        with conn:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                b = conn.recv(1)
                if not b:
                    return
                head += b
            if mode == "silent":
                stop.wait(CAP + 60)
                return
            name = head.split()[1].decode().rsplit("/", 1)[-1]
            try:
                body = open(os.path.join(release, name), "rb").read()
            except OSError:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            if mode == "body" and name.startswith("manifest.json"):
                conn.sendall(body)
                return
            try:
                for i in range(len(body)):
                    if stop.wait(1):
                        return
                    conn.sendall(body[i:i + 1])
            except OSError:
                return

    def serve():
        # Closed when stopped: later runs meet a refused connection, not
        # this tarpit (its record may outlive its provider in the DHT).
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def fetch(boot, pub, out):
    """One `phase-discover --fetch-all`; (seconds, exit code, stderr)."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            [DISCOVER, "--channel", "stable", "--arch", "arm64", "--bootstrap", boot,
             "--timeout", "30", "--release-key", pub] + RATE_ARGS + ["--fetch-all", out],
            capture_output=True, text=True, timeout=CAP)
        return time.monotonic() - t0, r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        return time.monotonic() - t0, None, f"stopped by the bench after {CAP} s"


def same(out, release):
    for name in ("vmlinuz", "initrd.img", "rootfs.img"):
        a = os.path.join(out, name)
        if not os.path.exists(a):
            return False
        if hashlib.sha256(open(a, "rb").read()).digest() != \
                hashlib.sha256(open(os.path.join(release, name), "rb").read()).digest():
            return False
    return True


def main():
    tmp = tempfile.mkdtemp(prefix="plasmd-tarpit-")
    try:
        run(tmp)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    release = os.path.join(tmp, "artifacts/stable/arm64")
    os.makedirs(release)
    sizes = {"vmlinuz": SIZE_MIB // 12 or 1, "initrd.img": SIZE_MIB // 3 or 1}
    sizes["rootfs.img"] = max(SIZE_MIB - sum(sizes.values()), 1)
    for name, mib in sizes.items():
        with open(os.path.join(release, name), "wb") as f:
            f.write(os.urandom(mib << 20))
    pub, key = os.path.join(tmp, "fleet.pub"), os.path.join(tmp, "fleet.key")
    subprocess.run([PLASMD, "release", "keygen", "-p", pub, "-s", key], check=True,
                   capture_output=True)
    subprocess.run([PLASMD, "release", "sign", "-s", key, release], check=True,
                   capture_output=True)
    node, nf = start([PLASMD, "node", "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--identity",
                      os.path.join(tmp, "node.key")], os.path.join(tmp, "node.log"))
    boot = wait_for(nf, "p2p listening on ")

    def provider(name, extra):
        p, f = start([PLASMD, "serve", "--artifacts", os.path.join(tmp, "artifacts"),
                      "--http-listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0",
                      "--identity", os.path.join(tmp, name + ".key"), "--bootstrap", boot]
                     + extra, os.path.join(tmp, name + ".log"))
        wait_for(f, "DHT record published")
        return p

    provider("genuine", [])
    out = os.path.join(tmp, "out")
    genuine = []
    for _ in range(REPEATS):
        secs, code, err = fetch(boot, pub, out)
        if code != 0 or not same(out, release):
            raise SystemExit(f"bench/tarpit: the genuine-only fetch failed: {err}")
        genuine.append(secs)
    g = statistics.median(genuine)
    bound = WINDOW + 2 * g
    rows = [("genuine provider only (median of %d)" % REPEATS, g, "ok", "")]
    for mode, what in (("body", "artifact bodies trickled 1 byte/s"),
                       ("silent", "accepts TCP, never answers"),
                       ("manifest", "manifest trickled 1 byte/s")):
        stop = threading.Event()
        port = tarpit(release, mode, stop)
        time.sleep(1.1)  # records are dated to the second: the tarpit's is newer
        p = provider("tarpit-" + mode, ["--external-url", f"http://127.0.0.1:{port}"])
        secs, code, err = fetch(boot, pub, out)
        ok = "byte-exact" if code == 0 and same(out, release) else f"FAILED ({err.strip()[-200:]})"
        met = "yes" if code == 0 and secs <= max(bound, 10 + 2 * g) else "no"
        rows.append((f"+ tarpit first: {what}", secs, ok, met))
        if mode == "body":
            url = f"http://127.0.0.1:{port}/stable/arm64/rootfs.img"
            t0 = time.monotonic()
            try:
                r = subprocess.run(["curl", "-s", "-o", "/dev/null", url], timeout=CAP)
                curl = (time.monotonic() - t0, "exit %d" % r.returncode)
            except (subprocess.TimeoutExpired, FileNotFoundError) as e:
                curl = (time.monotonic() - t0, "still waiting, stopped by the bench"
                        if isinstance(e, subprocess.TimeoutExpired) else "curl not installed")
        stop.set()
        p.terminate()
        p.wait()
    print("## Tarpit providers: phase-discover --release-key --fetch-all\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {SIZE_MIB} MiB of artifacts "
          f"(3 files), over 127.0.0.1; client {' '.join(RATE_ARGS) or 'without --rate-window'} (minimum rate 64 KiB/s), "
          f"head deadline 10 s. Target: at most the stall limit plus 2x the genuine-only time "
          f"= {WINDOW} + 2 x {g:.2f} = {bound:.2f} s (for the silent tarpit the stall limit is "
          f"the 10 s head deadline).\n")
    print("| run | seconds | files | within target |")
    print("| --- | ---: | --- | --- |")
    for name, secs, ok, met in rows:
        print(f"| {name} | {secs:.2f} | {ok} | {met} |")
    print(f"| curl (its defaults) from the trickling tarpit's rootfs.img | {curl[0]:.2f} | "
          f"{curl[1]} | |")


main()
