#!/usr/bin/env python3
"""A kazoo client that asks for a read-only session, driven by tests/tests/t58_read_only.rs.

Usage: kazoo_read_only.py HOST:PORT[,HOST:PORT...] PATH DATA

Phase 1, while the only reachable server is cut off from its quorum: connects with
KazooClient(read_only=True), checks that kazoo says CONNECTED_RO, that PATH holds DATA and that a create
fails with NotReadOnlyCallError, then prints "ro ok". Phase 2 starts when a line arrives on stdin (the test
restarted the rest of the ensemble): waits until kazoo is on a read-write session (it drops its read-only
session when that server rejoins its quorum, finds its session unknown and opens a new one), creates
PATH/kazoo-rw, checks PATH still holds DATA, and prints "rw ok". Every failure prints "FAIL <step>: <why>"
and exits 1 (2 if kazoo is missing).
"""
import sys
import threading
import time

try:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NotReadOnlyCallError
    from kazoo.protocol.states import KeeperState
except ImportError as e:  # pragma: no cover - the Rust test names the install command
    print(f"kazoo_read_only: cannot import kazoo ({e}): python3 -m pip install kazoo", file=sys.stderr)
    sys.exit(2)

T = 10.0  # seconds per operation


def fail(step, why):
    print(f"FAIL {step}: {why}", flush=True)
    sys.exit(1)


def eventually(step, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            fail(step, f"timed out after {timeout} s")
        time.sleep(0.05)


def main():
    hosts, path, data = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    client = KazooClient(hosts=hosts, read_only=True, timeout=10.0)
    states = []
    lock = threading.Lock()

    def listener(state):
        with lock:
            states.append(str(state))

    client.add_listener(listener)
    try:
        client.start(timeout=60)
    except Exception as e:
        fail("connect read-only", repr(e))
    eventually("kazoo says CONNECTED_RO", lambda: client.client_state == KeeperState.CONNECTED_RO, T)
    got, _ = client.get_async(path).get(timeout=T)
    if got != data:
        fail("read on the read-only server", f"{path} holds {got!r}, expected {data!r}")
    try:
        client.create_async(f"{path}/kazoo-ro", b"").get(timeout=T)
        fail("write on the read-only server", "the create succeeded")
    except NotReadOnlyCallError:
        pass
    except Exception as e:
        fail("write on the read-only server", f"expected NotReadOnlyCallError, got {e!r}")
    print("ro ok", flush=True)

    if not sys.stdin.readline():
        fail("wait for the test", "stdin closed before the quorum came back")
    eventually("kazoo is on a read-write session", lambda: client.client_state == KeeperState.CONNECTED, 90)
    try:
        client.create_async(f"{path}/kazoo-rw", b"rw").get(timeout=T)
        got, _ = client.get_async(path).get(timeout=T)
    except Exception as e:
        fail("write once read-write", repr(e))
    if got != data:
        fail("read once read-write", f"{path} holds {got!r}, expected {data!r}")
    with lock:
        print(f"states: {' '.join(states)}", flush=True)
    print("rw ok", flush=True)
    client.stop()
    client.close()


if __name__ == "__main__":
    main()
