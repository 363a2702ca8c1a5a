#!/usr/bin/env bash
# zkcli_session.sh: scripted sessions of Apache ZooKeeper's own CLI (zkCli.sh, Debian package `zookeeper`)
# against a ZooKeeper-compatible cluster, checking each output with grep.
#
# Usage: zkcli_session.sh HOST:PORT[,HOST:PORT...]
# Env:   ZKCLI (default /usr/share/zookeeper/bin/zkCli.sh), EXPECT_TTL (default 1: `create -t` must work;
#        Apache ZooKeeper refuses TTL nodes unless started with -Dzookeeper.extendedTypesEnabled=true)
#
# Commands go to zkCli on stdin, one session per block, so watches set in a block fire in it. Prints each
# check as "ok ..." or "FAIL ...", the whole zkCli output of a block that failed, and exits 1 if a check
# failed (2 if zkCli.sh is missing).
set -uo pipefail

ZKCLI=${ZKCLI:-/usr/share/zookeeper/bin/zkCli.sh}
if [ ! -x "$ZKCLI" ]; then
  echo "zkcli_session: $ZKCLI missing: apt-get install -y zookeeper" >&2
  exit 2
fi
[ $# -eq 1 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
SERVER=$1
ROOT=/zkcli-$$-$RANDOM
FAILS=0

# zkcli CMD... : one zkCli session running the commands, then quit; its output without SLF4J noise.
zkcli() {
  printf '%s\n' "$@" quit | timeout 120 "$ZKCLI" -server "$SERVER" 2>&1 | grep -v '^SLF4J'
}

# check BLOCK_NAME OUTPUT EXPECTED... : every EXPECTED line (fixed string) must appear in OUTPUT.
check() {
  local name=$1 out=$2 failed=0
  shift 2
  for want in "$@"; do
    if grep -qF -- "$want" <<<"$out"; then
      echo "ok   $name: $want"
    else
      echo "FAIL $name: missing '$want'"
      failed=1
    fi
  done
  if [ "$failed" = 1 ]; then
    FAILS=$((FAILS + 1))
    echo "----- zkCli output of '$name' -----"
    echo "$out"
    echo "-----"
  fi
}

out=$(zkcli \
  "create $ROOT data0" \
  "create $ROOT/a a0" \
  "create -e $ROOT/e x" \
  "create -s $ROOT/s- x" \
  "create -c $ROOT/cont" \
  "get $ROOT" \
  "get -s $ROOT" \
  "set $ROOT data1" \
  "set -v 5 $ROOT x" \
  "get $ROOT" \
  "ls $ROOT" \
  "stat $ROOT" \
  "getAllChildrenNumber $ROOT" \
  "getEphemerals $ROOT" \
  "create $ROOT/a again" \
  "sync $ROOT")
check "create, get, set, ls, stat" "$out" \
  "Created $ROOT" "Created $ROOT/a" "Created $ROOT/e" "Created $ROOT/s-0000000002" "Created $ROOT/cont" \
  "data0" "dataVersion = 0" "version No is not valid : $ROOT" "data1" \
  "[a, cont, e, s-0000000002]" "dataVersion = 1" "numChildren = 4" "[$ROOT/e]" \
  "Node already exists: $ROOT/a" "Sync is OK"

if [ "${EXPECT_TTL:-1}" = 1 ]; then
  out=$(zkcli "create -t 100000 $ROOT/ttl t" "get $ROOT/ttl")
  check "TTL node" "$out" "Created $ROOT/ttl"
fi

out=$(zkcli \
  "get -w $ROOT/a" \
  "set $ROOT/a a1" \
  "addWatch $ROOT/w" \
  "create $ROOT/w w" \
  "addWatch -m PERSISTENT_RECURSIVE $ROOT/r" \
  "create $ROOT/r r" \
  "create $ROOT/r/x x" \
  "delete $ROOT/r/x" \
  "get -w $ROOT/a" \
  "removewatches $ROOT/a" \
  "removewatches $ROOT/a")
check "watches" "$out" \
  "WatchedEvent state:SyncConnected type:NodeDataChanged path:$ROOT/a" \
  "WatchedEvent state:SyncConnected type:NodeCreated path:$ROOT/w" \
  "WatchedEvent state:SyncConnected type:NodeCreated path:$ROOT/r" \
  "WatchedEvent state:SyncConnected type:NodeCreated path:$ROOT/r/x" \
  "WatchedEvent state:SyncConnected type:NodeDeleted path:$ROOT/r/x" \
  "WatchedEvent state:SyncConnected type:DataWatchRemoved path:$ROOT/a" \
  "KeeperErrorCode = No such watcher for $ROOT/a"

out=$(zkcli \
  "addauth digest u:pw" \
  "create $ROOT/secret s auth:u:pw:cdrwa" \
  "getAcl $ROOT/secret" \
  "get $ROOT/secret" \
  "whoami")
check "auth and ACL" "$out" \
  "Created $ROOT/secret" "'digest,'u:BvFaefuhWURhnvpD7ipe45CKTpk=" ": cdrwa" "digest: u" "ip: 127.0.0.1"
out=$(zkcli "get $ROOT/secret" "whoami")
check "no auth" "$out" "Insufficient permission : $ROOT/secret" "ip: 127.0.0.1"

out=$(zkcli "delete $ROOT/a" "get $ROOT/a" "deleteall $ROOT" "ls $ROOT")
check "delete" "$out" "Node does not exist: $ROOT/a" "Node does not exist: $ROOT"

if [ "$FAILS" -gt 0 ]; then
  echo "zkcli_session: $FAILS block(s) failed"
  exit 1
fi
echo "zkcli_session: all checks passed"
