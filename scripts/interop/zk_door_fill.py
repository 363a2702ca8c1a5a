#!/usr/bin/env python3
"""Fills a ZooKeeper-compatible server with every kind of znode the import/export door must carry (t80).

Usage: zk_door_fill.py HOSTS bulk|tail|one

bulk: persistent, sequential and ephemeral nodes (the session is left open: the process exits without closing
it, so its ephemerals outlive it until its timeout), null, empty and 1 MiB data, a deep path, digest / world / ip
ACLs, and setData / setACL / deletes so that versions, cversions and pzxids are not trivial. Containers and TTL
nodes are made by the Rust test (kazoo has no createContainer or createTTL).
tail: a few more writes, run after the bulk so that they land after ZooKeeper's newest snapshot (t80 checks).
one: a single write (to move the zxid past a snapshot taken at the last txn).
"""
import os
import sys

from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl

hosts, phase = sys.argv[1], sys.argv[2]
zk = KazooClient(hosts=hosts, timeout=120.0)
zk.start(timeout=30)

if phase == "bulk":
    zk.add_auth("digest", "alice:secret")
    zk.create("/door", b"root of the door test")
    zk.create("/door/null", None)
    zk.create("/door/empty", b"")
    zk.create("/door/bytes", bytes(range(256)))
    # jute.maxbuffer is 0xfffff: the whole create request (path, ACL, header) must fit under it.
    zk.create("/door/big", os.urandom(1024 * 1024 - 1024))
    deep = "/door/deep"
    for i in range(30):
        deep += "/d%d" % i
    zk.create(deep, b"bottom", makepath=True)
    for _ in range(5):
        zk.create("/door/seq/item-", b"s", sequence=True, makepath=True)
    zk.create("/door/acl-digest", b"d", acl=[make_digest_acl("alice", "secret", all=True)])
    zk.create("/door/acl-world-read", b"w", acl=[make_acl("world", "anyone", read=True)])
    zk.create("/door/acl-ip", b"i", acl=[make_acl("ip", "127.0.0.1", all=True), make_acl("ip", "10.0.0.0/8", read=True)])
    zk.create("/door/acl-mixed", b"m", acl=[make_digest_acl("alice", "secret", read=True, write=True), make_acl("world", "anyone", read=True)])
    zk.create("/door/many")
    for i in range(150):
        zk.create("/door/many/n-%03d" % i, b"v%d" % i)
    for i in range(0, 150, 3):
        zk.set("/door/many/n-%03d" % i, b"changed")
        zk.set("/door/many/n-%03d" % i, None)
    for i in range(0, 150, 5):
        zk.delete("/door/many/n-%03d" % i)
    for i in range(1, 150, 7):
        if zk.exists("/door/many/n-%03d" % i):
            zk.set_acls("/door/many/n-%03d" % i, [make_acl("world", "anyone", read=True, write=True, admin=True)])
    zk.create("/door/eph", b"e", ephemeral=True)
    zk.create("/door/eph-seq-", None, ephemeral=True, sequence=True)
    # Leave without closing the session: its ephemerals stay until it times out.
    os._exit(0)
elif phase == "tail":
    zk.create("/door/tail")
    for i in range(8):
        zk.create("/door/tail/t-%d" % i, b"after the snapshot %d" % i)
    zk.set("/door/bytes", b"set after the snapshot")
    zk.delete("/door/tail/t-0")
    zk.set_acls("/door/tail/t-1", [make_acl("world", "anyone", read=True)])
elif phase == "one":
    zk.create("/door/tail/one-", b"", sequence=True)
else:
    sys.exit("unknown phase " + phase)
zk.stop()
