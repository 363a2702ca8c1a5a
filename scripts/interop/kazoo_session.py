#!/usr/bin/env python3
"""A scripted kazoo session against a ZooKeeper-compatible cluster, checking every result.

Usage: kazoo_session.py HOST:PORT[,HOST:PORT...]

Runs create / get / set / children / ephemeral / sequence / watches / transaction / ACL / sync / delete steps
through kazoo (the Python client), each with a 10 s limit, prints "ok <step>" or "FAIL <step>: <why>" per
step, and exits 1 if any step failed (2 if kazoo is missing or no session could be opened). The steps run
under a fresh root node (/kazoo-<random>), removed at the end.
"""
import secrets
import sys
import threading
import time
import traceback

try:
    from kazoo.client import KazooClient
    from kazoo.exceptions import BadVersionError, NoAuthError, NodeExistsError, NoNodeError, RolledBackError
    from kazoo.security import make_digest_acl
except ImportError as e:  # pragma: no cover - the Rust test names the install command
    print(f"kazoo_session: cannot import kazoo ({e}): python3 -m pip install kazoo", file=sys.stderr)
    sys.exit(2)

T = 10.0  # seconds per operation
FAILURES = []


def op(async_result):
    """Waits for an async kazoo call, at most T seconds."""
    return async_result.get(timeout=T)


def step(name):
    def run(fn):
        try:
            fn()
            print(f"ok {name}", flush=True)
        except Exception as e:  # every failure is reported, then the next step runs
            FAILURES.append(name)
            print(f"FAIL {name}: {e!r}", flush=True)
            traceback.print_exc(file=sys.stdout)
        return fn

    return run


def expect(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def eventually(what, predicate, timeout=T):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def raises(exc, fn, what):
    try:
        fn()
    except exc:
        return
    except Exception as e:
        raise AssertionError(f"{what}: expected {exc.__name__}, got {e!r}")
    raise AssertionError(f"{what}: expected {exc.__name__}, got success")


def connect(hosts, **kwargs):
    zk = KazooClient(hosts=hosts, timeout=10.0, **kwargs)
    zk.start(timeout=30)
    return zk


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    hosts = sys.argv[1]
    try:
        zk = connect(hosts)
        other = connect(hosts)
    except Exception as e:
        print(f"kazoo_session: no session with {hosts}: {e!r}", file=sys.stderr)
        return 2
    root = f"/kazoo-{secrets.token_hex(4)}"

    @step("create and get")
    def _():
        expect(op(zk.create_async(root, b"root")), root, "created path")
        data, stat = op(zk.get_async(root))
        expect((data, stat.version, stat.dataLength, stat.numChildren), (b"root", 0, 4, 0), "data and stat")
        raises(NodeExistsError, lambda: op(zk.create_async(root, b"")), "create of an existing node")
        raises(NoNodeError, lambda: op(zk.create_async(root + "/no/such", b"")), "create under a missing parent")

    @step("set with versions")
    def _():
        stat = op(zk.set_async(root, b"v1", version=0))
        expect(stat.version, 1, "version after set")
        raises(BadVersionError, lambda: op(zk.set_async(root, b"v2", version=0)), "set with a stale version")
        expect(op(zk.get_async(root))[0], b"v1", "data after the failed set")

    @step("children")
    def _():
        for name in ("b", "a", "c"):
            op(zk.create_async(f"{root}/{name}", name.encode()))
        expect(sorted(op(zk.get_children_async(root))), ["a", "b", "c"], "children")
        children, stat = zk.get_children(root, include_data=True)
        expect((sorted(children), stat.numChildren), (["a", "b", "c"], 3), "children with stat")

    @step("ephemeral goes with its session")
    def _():
        path = op(other.create_async(f"{root}/eph", b"", ephemeral=True))
        eventually("the other session's ephemeral is visible", lambda: zk.exists(path) is not None)
        expect(zk.exists(path).ephemeralOwner, other.client_id[0], "ephemeral owner")
        other.stop()
        other.close()
        eventually("the closed session's ephemeral is gone", lambda: zk.exists(path) is None)

    @step("sequential names")
    def _():
        paths = [op(zk.create_async(f"{root}/seq/n-", b"", sequence=True, makepath=True)) for _ in range(5)]
        suffixes = [p[len(f"{root}/seq/n-"):] for p in paths]
        if not all(len(s) == 10 and s.isdigit() for s in suffixes):
            raise AssertionError(f"suffixes are not %010d: {suffixes}")
        numbers = [int(s) for s in suffixes]
        expect(numbers, sorted(set(numbers)), "strictly increasing sequence numbers")
        expect(sorted(op(zk.get_children_async(f"{root}/seq"))), [p.rsplit("/", 1)[1] for p in paths], "listed")

    @step("watches: data, exists, children")
    def _():
        events = []
        fired = threading.Event()

        def watch(event):
            events.append((event.type, event.path))
            fired.set()

        zk.get(f"{root}/a", watch=watch)
        op(zk.set_async(f"{root}/a", b"changed"))
        if not fired.wait(T):
            raise AssertionError("no data watch event")
        expect(events, [("CHANGED", f"{root}/a")], "data watch event")
        events.clear()
        fired.clear()
        expect(zk.exists(f"{root}/new", watch=watch), None, "exists of a missing node")
        op(zk.create_async(f"{root}/new", b""))
        if not fired.wait(T):
            raise AssertionError("no exists watch event")
        expect(events, [("CREATED", f"{root}/new")], "exists watch event")
        events.clear()
        fired.clear()
        zk.get_children(root, watch=watch)
        op(zk.delete_async(f"{root}/new"))
        if not fired.wait(T):
            raise AssertionError("no child watch event")
        expect(events, [("CHILD", root)], "child watch event")

    @step("transaction: all or nothing")
    def _():
        t = zk.transaction()
        t.create(f"{root}/t1", b"x")
        t.set_data(f"{root}/b", b"t", version=0)
        t.check(f"{root}/c", 0)
        results = t.commit()
        expect((results[0], results[1].version, results[2]), (f"{root}/t1", 1, True), "committed transaction")
        t = zk.transaction()
        t.create(f"{root}/t2", b"x")
        t.check(f"{root}/c", 99)
        results = t.commit()
        expect(zk.exists(f"{root}/t2"), None, "node of a failed transaction")
        if not (isinstance(results[0], RolledBackError) and isinstance(results[1], BadVersionError)):
            raise AssertionError(f"failed transaction results: {results!r} (expected RolledBackError, BadVersionError)")

    @step("digest ACL")
    def _():
        zk.add_auth("digest", "bob:pw")
        acl = make_digest_acl("bob", "pw", all=True)
        op(zk.create_async(f"{root}/secret", b"s", acl=[acl]))
        expect(op(zk.get_async(f"{root}/secret"))[0], b"s", "read with the right auth")
        expect(zk.get_acls(f"{root}/secret")[0], [acl], "ACL")
        anon = connect(hosts)
        try:
            raises(NoAuthError, lambda: op(anon.get_async(f"{root}/secret")), "read without auth")
        finally:
            anon.stop()
            anon.close()

    @step("sync")
    def _():
        expect(op(zk.sync_async(root)), root, "sync")

    @step("ruok")
    def _():
        expect(zk.command(b"ruok"), "imok", "ruok")

    @step("delete")
    def _():
        raises(BadVersionError, lambda: op(zk.delete_async(f"{root}/a", version=7)), "delete with a wrong version")
        zk.delete(root, recursive=True)
        expect(zk.exists(root), None, "root after the recursive delete")

    zk.stop()
    zk.close()
    if FAILURES:
        print(f"kazoo_session: {len(FAILURES)} step(s) failed: {', '.join(FAILURES)}")
        return 1
    print("kazoo_session: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
