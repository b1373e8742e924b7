#!/usr/bin/env python3
"""Boot-storm benchmark (issue 19): a virtual rack on this machine.

One network namespace per board and one for the provider, joined by a
bridge in a namespace of its own; every link shaped with tc tbf in both
directions (RATE, default 100mbit); addresses from 192.0.2.0/24 inside the
namespaces only. The provider serves a signed release of one SIZE_MIB
artifact; every board runs phase-discover --release-key --fetch-all (the
download engine phase-boot uses), all boards started at once:

  one board alone            1 board, no sharing
  all boards, origin only    N boards, no sharing (every byte from the provider)
  all boards, peer-assisted  N boards with --seed (chunks from each other)

A board's time runs from its start until its file is in place (renamed
after every chunk verified); "all boards" is the last board's time. The
origin's bytes are the provider's plasmd_http_sent_bytes_total. Prints a
Markdown table and one `storm:` line per board count.

Usage: storm.py PLASMD DISCOVER [--quick]   (as root; see bench/storm)
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

PLASMD, DISCOVER = sys.argv[1], sys.argv[2]
QUICK = "--quick" in sys.argv[3:]
BOARDS = [int(b) for b in os.environ.get("BOARDS", "10" if QUICK else "1,10,25,50").split(",")]
SIZE_MIB = int(os.environ.get("SIZE_MIB", "64" if QUICK else "256"))
RATE = os.environ.get("RATE", "100mbit")
RATE_BPS = float(re.match(r"(\d+)mbit", RATE).group(1)) * 1e6
LINGER = os.environ.get("LINGER", "30")
CAP = float(os.environ.get("CAP", "1800"))  # seconds one run may take
# SEED_RATE=BYTES caps each board's upload (--seed-rate; phase.share_rate).
SEED_RATE = os.environ.get("SEED_RATE", "")
# SKIP_ORIGIN=1 leaves out the origin-only runs (N times one board's time
# each): for trying the peer-assisted runs alone.
SKIP_ORIGIN = os.environ.get("SKIP_ORIGIN") == "1"
WORK = os.environ.get("WORK", "/tmp/plasmd-storm")
PREFIX = "plst"
SW = f"{PREFIX}-sw"
PROVIDER_IP = "192.0.2.1"

namespaces = []
running = []


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def ns_of(name):
    return f"{PREFIX}-{name}"


def board_ip(i):
    return f"192.0.2.{10 + i}"


def add_host(name, ip):
    """A namespace on the bridge with `ip`, its link shaped both ways."""
    ns = ns_of(name)
    sh("ip", "netns", "add", ns)
    namespaces.append(ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", SW, "link", "add", f"sw-{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "-n", SW, "link", "set", f"sw-{name}", "master", "br0", "up")
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    # Upload (the host's egress) and download (the switch port's egress).
    tbf = ["root", "tbf", "rate", RATE, "burst", "32kbit", "latency", "50ms"]
    sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", *tbf)
    sh("ip", "netns", "exec", SW, "tc", "qdisc", "add", "dev", f"sw-{name}", *tbf)


def setup(max_boards):
    sh("ip", "netns", "add", SW)
    namespaces.append(SW)
    sh("ip", "-n", SW, "link", "set", "lo", "up")
    sh("ip", "-n", SW, "link", "add", "br0", "type", "bridge", "stp_state", "0")
    sh("ip", "-n", SW, "link", "set", "br0", "up")
    add_host("p", PROVIDER_IP)
    for i in range(max_boards):
        add_host(f"b{i}", board_ip(i))


def teardown():
    for p in running:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in running:
        try:
            p.wait(timeout=10)
        except Exception:
            pass
    for ns in reversed(namespaces):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def make_release():
    """A signed release of one SIZE_MIB artifact: (tree, public key, sha256)."""
    tree = os.path.join(WORK, "tree")
    rel = os.path.join(tree, "stable", "arm64")
    os.makedirs(rel)
    h = hashlib.sha256()
    with open(os.path.join(rel, "rootfs.img"), "wb") as f:
        for _ in range(SIZE_MIB):
            block = os.urandom(1 << 20)
            h.update(block)
            f.write(block)
    pub, key = os.path.join(WORK, "fleet.pub"), os.path.join(WORK, "fleet.key")
    sh(PLASMD, "release", "keygen", "-p", pub, "-s", key)
    sh(PLASMD, "release", "sign", "-s", key, "--release-seq", "1", rel)
    return tree, pub, h.hexdigest()


def start_provider(tree):
    ns = ns_of("p")
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, PLASMD, "serve", "--artifacts", tree,
         "--http-listen", f"{PROVIDER_IP}:8080", "--p2p-listen", f"/ip4/{PROVIDER_IP}/tcp/4001",
         "--identity", os.path.join(WORK, "provider.key")],
        stdout=subprocess.PIPE, stderr=open(os.path.join(WORK, "provider.log"), "w"),
        text=True, start_new_session=True)
    running.append(p)
    end = time.time() + 60
    for line in p.stdout:
        m = re.match(r"p2p listening on (\S+)", line)
        if m:
            addr = m.group(1)
            break
        if time.time() > end:
            sys.exit("storm: the provider did not start")
    else:
        sys.exit("storm: the provider exited")
    # The first scan hashes the release before it is served.
    while "rootfs.img" not in get_in(ns, f"http://{PROVIDER_IP}:8080/stable/arm64/manifest.json"):
        if time.time() > end:
            sys.exit("storm: the provider never served the release")
        time.sleep(0.5)
    return addr


def get_in(ns, url):
    """GET url from inside namespace ns (empty on failure)."""
    code = f"import urllib.request;print(urllib.request.urlopen({url!r},timeout=5).read().decode())"
    r = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code],
                       capture_output=True, text=True)
    return r.stdout


def origin_sent():
    text = get_in(ns_of("p"), f"http://{PROVIDER_IP}:8080/metrics")
    m = re.search(r"^plasmd_http_sent_bytes_total (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def run(n, addr, pub, sha, share):
    """n boards at once; (last board's time, [(cpu s, max rss KiB)], origin bytes)."""
    before = origin_sent()
    boards = []
    t0 = time.time()
    for i in range(n):
        out = os.path.join(WORK, f"out-b{i}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["ip", "netns", "exec", ns_of(f"b{i}"), DISCOVER, "--channel", "stable",
               "--arch", "arm64", "--bootstrap", addr, "--release-key", pub,
               "--timeout", "120", "--fetch-all", out]
        if share:
            cmd += ["--seed", "0.0.0.0:8090", "--seed-linger", LINGER]
            if SEED_RATE:
                cmd += ["--seed-rate", SEED_RATE]
        log = open(os.path.join(WORK, f"b{i}-{'peer' if share else 'origin'}-{n}.log"), "w")
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        running.append(p)
        boards.append((p, os.path.join(out, "rootfs.img"), t0))
    finished = {}
    while len(finished) < n:
        now = time.time()
        for i, (p, path, start) in enumerate(boards):
            if i not in finished and os.path.exists(path):
                finished[i] = now - start
            elif i not in finished and p.poll() is not None:
                sys.exit(f"storm: board {i} exited ({p.returncode}) without its file; see {WORK}")
        if now - t0 > CAP:
            sys.exit(f"storm: {n - len(finished)} board(s) not done after {CAP:.0f} s")
        time.sleep(0.05)
    usage = []
    for p, _, _ in boards:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        running.remove(p)
        if p.returncode != 0:
            sys.exit(f"storm: a board exited {p.returncode}; see {WORK}")
        usage.append((ru.ru_utime + ru.ru_stime, ru.ru_maxrss))
    sent = origin_sent() - before
    times = sorted(finished.values())
    print(f"storm: {n} board(s), {'peer-assisted' if share else 'origin only'}: first {times[0]:.1f} s, "
          f"median {times[len(times) // 2]:.1f} s, last {times[-1]:.1f} s", file=sys.stderr)
    for i, (_, path, _) in enumerate(boards):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if h.hexdigest() != sha:
            sys.exit(f"storm: board {i}'s file is not the release")
        shutil.rmtree(os.path.dirname(path))
    return max(finished.values()), usage, sent


RECEIVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
buf, got = bytearray(1 << 20), 0
while k := c.recv_into(buf):
    got += k
print(got, flush=True)
"""

SENDER = """
import socket, sys
c = socket.create_connection((sys.argv[1], 9000))
with open(sys.argv[2], "rb") as f:
    c.sendfile(f)
c.close()
"""


def capacity(n, release_file):
    """What this machine's virtual rack can carry: every board sends the
    release to the next one at once over plain TCP; the last one's time."""
    if n < 2:
        return float("nan")
    receivers = []
    for i in range(n):
        r = subprocess.Popen(["ip", "netns", "exec", ns_of(f"b{i}"), "python3", "-c", RECEIVER, board_ip(i)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        running.append(r)
        r.stdout.readline()
        receivers.append(r)
    t0 = time.time()
    senders = []
    for i in range(n):
        p = subprocess.Popen(["ip", "netns", "exec", ns_of(f"b{i}"), "python3", "-c", SENDER,
                              board_ip((i + 1) % n), release_file], start_new_session=True)
        running.append(p)
        senders.append(p)
    for r in receivers:
        got = int(r.stdout.readline() or 0)
        r.wait()
        running.remove(r)
        if got != SIZE_MIB * 2**20:
            sys.exit(f"storm: a capacity receiver got {got} bytes")
    took = time.time() - t0
    for p in senders:
        p.wait()
        running.remove(p)
    return took


def bound(n):
    """Kumar & Ross: max(S/u_s, S/d, N*S/(u_s + N*u)) with every rate RATE."""
    bits = SIZE_MIB * 8 * 2**20
    return max(bits / RATE_BPS, bits / RATE_BPS, n * bits / (RATE_BPS + n * RATE_BPS))


def main():
    if os.geteuid() != 0:
        sys.exit("storm: run as root (network namespaces)")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    try:
        setup(max(BOARDS))
        tree, pub, sha = make_release()
        addr = start_provider(tree)
        release = SIZE_MIB * 2**20
        single, _, _ = run(1, addr, pub, sha, share=False)
        rows, lines = [], []
        for n in BOARDS:
            if n == 1 or SKIP_ORIGIN:
                origin_only = single if n == 1 else float("nan")
            else:
                origin_only, _, _ = run(n, addr, pub, sha, share=False)
            peer, usage, sent = run(n, addr, pub, sha, share=True)
            rack = capacity(n, os.path.join(tree, "stable", "arm64", "rootfs.img"))
            cpu = sum(u[0] for u in usage) / len(usage)
            rss = max(u[1] for u in usage) / 1024
            rows.append(f"| {n} | {single:.1f} | {origin_only:.1f} | {peer:.1f} | {sent / release:.2f} "
                        f"| {peer / single:.2f} | {cpu:.1f} s, {rss:.0f} MiB | {bound(n):.1f} | {rack:.1f} |")
            lines.append(f"storm: boards={n} size_mib={SIZE_MIB} single_s={single:.1f} "
                         f"origin_only_s={origin_only:.1f} peer_s={peer:.1f} origin_bytes={sent}")
        print(f"Release of {SIZE_MIB} MiB (one artifact, signed), every link tbf {RATE} both ways; "
              f"boards run phase-discover --release-key --fetch-all (peer-assisted: --seed, "
              f"--seed-linger {LINGER}{', --seed-rate ' + SEED_RATE if SEED_RATE else ''}). Origin bytes: the provider's plasmd_http_sent_bytes_total "
              f"in the peer-assisted run (origin only sends every board a copy). The last column is "
              f"what this machine's virtual rack carries at all: every board sending the release to "
              f"the next one at once over plain TCP (kernel sendfile, Python receiver).")
        print()
        print("| boards | one board alone (s) | all boards, origin only (s) | all boards, peer-assisted (s) "
              "| origin bytes sent (× release) | peer-assisted ÷ one board | CPU s and max RSS per board "
              "| Kumar & Ross bound (s) | this machine's rack, plain TCP (s) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(r)
        print()
        for line in lines:
            print(line)
    finally:
        teardown()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
