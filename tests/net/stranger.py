"""A foreign process that knows a job's id tries to join its pipeline.

Usage: stranger.py PID GO_FILE

PID is a pippy-batch rank > 0 waiting for its previous rank. The stranger
finds that process's listening TCP port (/proc/PID/fd and /proc/net/tcp) and
its job id (PMIX_NAMESPACE in /proc/PID/environ), as anyone on the node
could, and opens four connections before the real previous rank may start
(it waits for GO_FILE, which this script creates):
  silent    connects and never speaks;
  otherjob  a well-formed HELLO for another job;
  reflect   a perfect HELLO claiming to be the previous rank, then the
            rank's own proof sent back as the answer;
  guess     the same HELLO, then a random answer.
Each must be dropped: no OK ever comes back. Prints one line per connection
and exits 1 if any of them was let in.
"""
import os
import socket
import struct
import sys
import time

HELLO = 0x32484250  # "PBH2"
CHAL = 0x48434250   # "PBCH"
RESP = 0x53524250   # "PBRS"
OK = 0x4B4F4250     # "PBOK"


def fnv1a64(s: bytes) -> int:
    h = 1469598103934665603
    for b in s:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)


def listening_ports(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    ports = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[3] == "0A" and p[9] in inodes:  # LISTEN
                ports.append(int(p[1].split(":")[1], 16))
    return ports


def hello(world, src, dst, job):
    return struct.pack("<IIIIIQI", HELLO, 2, world, src, dst, job, 0) + os.urandom(32)


def read_until_closed(s, timeout):
    """All bytes the rank sends until it closes (or the timeout)."""
    s.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    while time.time() < end:
        try:
            b = s.recv(4096)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not b:
            return data, True
        data += b
    return data, False


def main():
    pid, go = int(sys.argv[1]), sys.argv[2]
    for _ in range(600):
        ports = listening_ports(pid)
        if ports:
            break
        time.sleep(0.05)
    else:
        sys.exit("stranger: the rank never listened")
    if len(ports) != 1:
        sys.exit(f"stranger: rank listens on several ports {ports}")
    port = ports[0]
    env = environ(pid)
    job = fnv1a64(env[b"PMIX_NAMESPACE"])
    world = int(env[b"OMPI_COMM_WORLD_SIZE"])
    rank = int(env[b"OMPI_COMM_WORLD_RANK"])
    prev = (rank - 1) % world

    conns = {}
    for name in ("silent", "otherjob", "reflect", "guess"):
        s = socket.create_connection(("127.0.0.1", port))
        conns[name] = s
    conns["otherjob"].sendall(hello(world, prev, rank, fnv1a64(b"some-other-job")))
    h = hello(world, prev, rank, job)
    conns["reflect"].sendall(h)
    conns["guess"].sendall(hello(world, prev, rank, job))
    # Only now may the real previous rank start: the strangers come first.
    open(go, "w").close()

    bad = 0
    data, closed = read_until_closed(conns["otherjob"], 60)
    ok = closed and not data
    print(f"otherjob: {'dropped without an answer' if ok else 'ANSWERED %r' % data}")
    bad += not ok

    for name in ("reflect", "guess"):
        s = conns[name]
        s.settimeout(60)
        chal = b""
        while len(chal) < 72:
            b = s.recv(72 - len(chal))
            if not b:
                break
            chal += b
        if len(chal) != 72 or struct.unpack_from("<I", chal)[0] != CHAL:
            print(f"{name}: no challenge ({chal!r})")
            bad += 1
            continue
        tag = chal[40:72] if name == "reflect" else os.urandom(32)
        s.sendall(struct.pack("<II", RESP, 0) + tag)
        data, closed = read_until_closed(s, 60)
        ok = closed and struct.pack("<I", OK) not in data
        print(f"{name}: challenged, then {'dropped' if ok else 'LET IN %r' % data}")
        bad += not ok

    data, closed = read_until_closed(conns["silent"], 60)
    ok = closed and not data
    print(f"silent: {'dropped' if ok else 'ANSWERED %r' % data}")
    bad += not ok
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
