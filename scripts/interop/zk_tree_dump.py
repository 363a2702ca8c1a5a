#!/usr/bin/env python3
"""Prints the whole znode tree of a ZooKeeper-compatible server as one JSON document (t80): every znode's data
(hex, or null), ACL and full stat, by path. /zookeeper/config is left out: ZooKeeper's quorum peers rewrite it
at start-up from their configuration, outside any txn.

Usage: zk_tree_dump.py HOSTS
"""
import json
import sys

from kazoo.client import KazooClient

zk = KazooClient(hosts=sys.argv[1], timeout=30.0)
zk.start(timeout=30)
zk.add_auth("digest", "alice:secret")
# Every write committed before this client connected, whichever server it reached.
zk.sync("/")
# A super user is not needed: every ACL the fill script sets grants alice or anyone READ, but 'ip' ACLs need
# this client on 127.0.0.1, which it is.
tree = {}
todo = ["/"]
while todo:
    path = todo.pop()
    if path == "/zookeeper/config":
        continue
    data, stat = zk.get(path)
    acls, _ = zk.get_acls(path)
    tree[path] = {
        "data": None if data is None else data.hex(),
        "acl": sorted([a.perms, a.id.scheme, a.id.id] for a in acls),
        "stat": [stat.czxid, stat.mzxid, stat.pzxid, stat.ctime, stat.mtime, stat.version, stat.cversion,
                 stat.aversion, stat.ephemeralOwner, stat.dataLength, stat.numChildren],
    }
    for child in zk.get_children(path):
        todo.append(path.rstrip("/") + "/" + child)
json.dump(tree, sys.stdout, sort_keys=True)
zk.stop()
