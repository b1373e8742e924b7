#!/usr/bin/env python3
"""TFTP throughput of plasmd's server beside dnsmasq's, with and without
windowsize (RFC 7440), between two network namespaces.

Two network namespaces joined by a veth pair (192.0.2.1 the server,
192.0.2.2 the client), with `netem` delay on both ends if asked (where the
kernel has netem). Each server in turn
serves the same file; a client written here (it speaks blksize, tsize and
windowsize, as EDK2 does) fetches it with each block and window size, and
curl's `tftp://` (lock-step) fetches it too. Every download is checked
byte for byte. Prints a Markdown table and `tftp:` lines.

Usage (root): python3 bench/tftp.py PLASMD [--size MIB] [--delay-us N]
PLASMD must be built with `--features netboot`.
"""

import argparse
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

NS_S, NS_C = f"tftpb-s-{os.getpid()}", f"tftpb-c-{os.getpid()}"
SERVER, CLIENT = "192.0.2.1", "192.0.2.2"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def setup(delay_us):
    for ns in (NS_S, NS_C):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "tb0", "netns", NS_S, "type", "veth", "peer", "name", "tb1", "netns", NS_C)
    for ns, dev, addr in ((NS_S, "tb0", SERVER), (NS_C, "tb1", CLIENT)):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        if delay_us > 0:
            r = sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                   "delay", f"{delay_us}us", "limit", "10000", check=False)
            if r.returncode != 0:
                raise SystemExit(f"bench/tftp: no netem here ({r.stderr.strip()}): "
                                 "run with --delay-us 0")


def teardown():
    for ns in (NS_S, NS_C):
        sh("ip", "netns", "del", ns, check=False)


def fetch(path, blksize, windowsize, timeout=20.0):
    """Our client, run inside the client namespace by the parent (see
    `client_main`): returns (seconds, data, granted windowsize)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    opts = [b"blksize", str(blksize).encode(), b"tsize", b"0"]
    if windowsize > 1:
        opts += [b"windowsize", str(windowsize).encode()]
    rrq = b"\x00\x01" + path.encode() + b"\x00octet\x00" + b"".join(o + b"\x00" for o in opts)
    start = time.monotonic()
    s.sendto(rrq, (SERVER, 69))
    granted_block, granted_window = 512, 1
    data = bytearray()
    expected = 1
    tid = None
    first = True
    while True:
        if time.monotonic() - start > timeout:
            raise RuntimeError("timed out")
        try:
            pkt, addr = s.recvfrom(65536)
        except socket.timeout:
            # Our last ACK was lost: say it again.
            if tid is not None:
                s.sendto(struct.pack("!HH", 4, (expected - 1) & 0xFFFF), tid)
            continue
        tid = tid or addr
        op = struct.unpack("!H", pkt[:2])[0]
        if op == 6 and first:  # OACK
            fields = pkt[2:].split(b"\x00")
            for k, v in zip(fields[::2], fields[1::2]):
                if k.lower() == b"blksize":
                    granted_block = int(v)
                if k.lower() == b"windowsize":
                    granted_window = int(v)
            s.sendto(struct.pack("!HH", 4, 0), tid)
            first = False
            continue
        first = False
        if op == 5:
            raise RuntimeError(f"error from server: {pkt[4:].rstrip(bytes(1))!r}")
        if op != 3:
            continue
        block = struct.unpack("!H", pkt[2:4])[0]
        payload = pkt[4:]
        last = len(payload) < granted_block
        if block == expected & 0xFFFF:
            data += payload
            expected += 1
            if last or (expected - 1) % granted_window == 0:
                s.sendto(struct.pack("!HH", 4, block), tid)
            if last:
                return time.monotonic() - start, bytes(data), granted_window
        else:
            # Out of order or again: ask from where we are.
            s.sendto(struct.pack("!HH", 4, (expected - 1) & 0xFFFF), tid)


def client_main(args):
    """`tftp.py --client PATH BLKSIZE WINDOW`: one download, one line out."""
    path, blk, win = args[0], int(args[1]), int(args[2])
    secs, data, granted = fetch(path, blk, win)
    print(f"{secs:.4f} {hashlib.sha256(data).hexdigest()} {len(data)} {granted}")


def in_client(*cmd):
    return sh("ip", "netns", "exec", NS_C, *cmd)


def start_server(kind, plasmd, work, root):
    log = open(os.path.join(work, f"{kind}.log"), "w")
    if kind == "plasmd":
        cmd = [plasmd, "serve", "--artifacts", os.path.join(work, "art"), "--identity",
               os.path.join(work, "id.key"), "--http-listen", f"{SERVER}:8080", "--p2p-listen",
               f"/ip4/{SERVER}/tcp/4001", "--netboot", "--netboot-dir", work,
               "--netboot-cache", os.path.join(work, "cache"), "--netboot-channel", "stable/arm64",
               "--release-key", os.path.join(work, "fleet.pub")]
    else:
        cmd = ["dnsmasq", "--keep-in-foreground", "--port=0", "--enable-tftp",
               f"--tftp-root={root}", f"--listen-address={SERVER}", "--bind-interfaces",
               "--log-facility=-", "--user=root", "--pid-file="]
    p = subprocess.Popen(["ip", "netns", "exec", NS_S, *cmd], stdout=log, stderr=log)
    time.sleep(1.5)
    if p.poll() is not None:
        raise RuntimeError(f"{kind} did not start: see {log.name}")
    return p


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client_main(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("plasmd")
    ap.add_argument("--size", type=int, default=32, help="MiB (default 32)")
    ap.add_argument("--delay-us", type=int, default=0,
                    help="one-way netem delay on each end, microseconds (default 0: the "
                         "veth's own; this machine's kernel has no netem)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/tftp: needs root (network namespaces)")
    work = tempfile.mkdtemp(prefix="tftp-bench-")
    rpi = os.path.join(work, "rpi")
    os.makedirs(rpi)
    os.makedirs(os.path.join(work, "art", "stable", "arm64"))
    with open(os.path.join(work, "art", "stable", "arm64", "vmlinuz"), "wb") as f:
        f.write(b"k")
    blob = os.urandom(a.size << 20)
    want = hashlib.sha256(blob).hexdigest()
    with open(os.path.join(rpi, "stage1.efi"), "wb") as f:
        f.write(blob)
    # The Pi's cmdline.txt template makes the directory a Pi file set, which
    # plasmd serves from TFTP's root as it is (no stage-1 to prepare).
    with open(os.path.join(rpi, "cmdline.txt"), "w") as f:
        f.write("console=serial0 plasmd.netboot=template\n")
    sh(a.plasmd, "release", "keygen", "-p", os.path.join(work, "fleet.pub"), "-s",
       os.path.join(work, "fleet.key"))
    rows = []
    procs = []

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        teardown()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        setup(a.delay_us)
        me = os.path.abspath(__file__)
        for kind in ("plasmd", "dnsmasq"):
            p = start_server(kind, a.plasmd, work, rpi)
            procs.append(p)
            for blk, win in ((512, 1), (1468, 1), (1468, 4), (1468, 16)):
                out = in_client(sys.executable, me, "--client", "stage1.efi", str(blk), str(win))
                secs, digest, n, granted = out.stdout.split()
                ok = digest == want and int(n) == len(blob)
                rows.append((kind, f"ours, blksize {blk} windowsize {win}", granted, float(secs), ok))
            t0 = time.monotonic()
            got = subprocess.run(["ip", "netns", "exec", NS_C, "curl", "-s", "--tftp-blksize",
                                  "1468", f"tftp://{SERVER}/stage1.efi"], capture_output=True)
            secs = time.monotonic() - t0
            ok = got.returncode == 0 and hashlib.sha256(got.stdout).hexdigest() == want
            rows.append((kind, "curl, blksize 1468", "1", secs, ok))
            p.send_signal(signal.SIGTERM)
            p.wait(10)
    finally:
        stop()
    mib = a.size
    print(f"## TFTP: {mib} MiB, link delay {a.delay_us} us each way ({2 * a.delay_us / 1000:.1f} ms RTT)\n")
    print("| server | client | window granted | seconds | MB/s | byte-exact |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for kind, client, granted, secs, ok in rows:
        rate = (mib << 20) / secs / 1e6
        print(f"| {kind} | {client} | {granted} | {secs:.2f} | {rate:.1f} | {'yes' if ok else 'NO'} |")
    for kind, client, granted, secs, ok in rows:
        print(f"tftp: {kind} {client.replace(' ', '_')} window={granted} secs={secs:.2f} ok={ok}")
    if not all(r[4] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
