#!/usr/bin/env python3
"""A model of closed-loop group commit with K fdatasyncs in flight (issue 14's 64-writer target).

W writer threads each queue a 100-byte record and wait until it is durable, then queue the next. K syncer
threads each take everything queued, write it at the file's end (one writer at a time, so records stay in
order) and run fdatasync on a descriptor of their own (a writeback error is reported once per open file
description, so overlapping syncs must not share one); records are acknowledged in the order they were
written. With K = 1 this is the WAL's group commit; K = 2 is "two fdatasyncs in flight".

Usage: group_commit_model.py W K SECONDS FILE   (FILE on the disk to measure; 64 MiB, overwritten)
Prints appends/s, fdatasyncs/s and records per fdatasync. Python's threads add overhead to every hand-off,
so compare K values with each other, in one run, not with the Rust WAL's absolute figures.
"""
import collections
import os
import sys
import threading
import time

W, K, SECS, PATH = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
SIZE = 64 << 20
RECORD = 100

fd0 = os.open(PATH, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
os.pwrite(fd0, b"\0" * SIZE, 0)  # written through, as the WAL's zero-filled segments are
os.fsync(fd0)

lock = threading.Condition()
queue = collections.deque()
state = {"end": 0, "seq": 0, "acked": 0, "writing": False, "syncs": 0}
finished = {}
stop = False


def syncer():
    fd = os.open(PATH, os.O_RDWR)
    while True:
        with lock:
            while (not queue or state["writing"]) and not stop:
                lock.wait()
            if stop:
                return
            batch = list(queue)
            queue.clear()
            state["writing"] = True
            offset = state["end"]
            state["end"] = (offset + RECORD * len(batch)) % (SIZE - (1 << 20))
            state["seq"] += 1
            seq = state["seq"]
        os.pwrite(fd, b"x" * (RECORD * len(batch)), offset)
        with lock:
            state["writing"] = False
            lock.notify_all()
        os.fdatasync(fd)
        with lock:
            finished[seq] = batch
            while state["acked"] + 1 in finished:
                state["acked"] += 1
                state["syncs"] += 1
                for waiter in finished.pop(state["acked"]):
                    waiter.set()


appended = [0]


def writer():
    while not stop:
        durable = threading.Event()
        with lock:
            queue.append(durable)
            lock.notify_all()
        durable.wait()
        appended[0] += 1


threads = [threading.Thread(target=syncer, daemon=True) for _ in range(K)]
threads += [threading.Thread(target=writer, daemon=True) for _ in range(W)]
for t in threads:
    t.start()
time.sleep(1)
a0, s0, t0 = appended[0], state["syncs"], time.time()
time.sleep(SECS)
a1, s1, t1 = appended[0], state["syncs"], time.time()
stop = True
print(f"W={W} K={K} appends/s={(a1 - a0) / (t1 - t0):.0f} fdatasyncs/s={(s1 - s0) / (t1 - t0):.0f} "
      f"records/fdatasync={(a1 - a0) / max(1, s1 - s0):.1f}")
os._exit(0)
