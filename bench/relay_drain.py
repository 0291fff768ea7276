#!/usr/bin/env python3
"""One `mailq-relay --once` run over a spool that already holds the messages, timed from outside.

    relay_drain.py --relay BIN --config FILE --log FILE --messages N --size S --layout L
                   --label TEXT --json OUT

Prints and appends to OUT one JSON record ("relay_drain"): the process's wall time from launch
to exit, the recovery time and count the relay's `started` notice gives, the time from launch to
the last D record of its log (log times have centisecond resolution), the D records counted,
and the process's peak resident memory (getrusage of the child).
"""
import argparse
import datetime
import json
import re
import resource
import subprocess
import sys
import time

STAMP = re.compile(r"^(\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d\.\d\d) (\S+)\s+(.*)$")
STARTED = re.compile(r"notice: started: spool .* \((\w+)\), (\d+) messages? recovered in ([0-9.]+) s")


def when(stamp):
    return datetime.datetime.strptime(stamp, "%d-%b-%Y %H:%M:%S.%f").timestamp()


def main():
    ap = argparse.ArgumentParser()
    for name in ("relay", "config", "log", "layout", "label", "json"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args()

    t0 = time.time()
    proc = subprocess.run([a.relay, "--config", a.config, "--once"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=a.timeout)
    t1 = time.time()
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    delivered = 0
    first_d = last_d = None
    recovered = recovery = None
    opened_as = None
    with open(a.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):
                continue
            m = STAMP.match(line)
            if not m:
                continue
            rest = m.group(3)
            if rest.startswith("D ") and m.group(2) != "mailq-relay":
                t = when(m.group(1))
                first_d = t if first_d is None else first_d
                last_d = t
                delivered += 1
            elif recovered is None:
                s = STARTED.search(line)
                if s:
                    opened_as, recovered, recovery = s.group(1), int(s.group(2)), float(s.group(3))

    wall = t1 - t0
    to_last = (last_d - t0) if last_d is not None else None
    rec = {
        "bench": "relay_drain", "engine": "mailq", "label": a.label, "layout": a.layout,
        "opened_as": opened_as, "size": a.size, "messages": a.messages,
        "delivered": delivered, "complete": delivered == a.messages, "exit": proc.returncode,
        "recovered": recovered, "recovery_s": recovery,
        "to_last_delivery_s": round(to_last, 3) if to_last else None,
        "wall_s": round(wall, 3),
        "msgs_per_s": round(delivered / to_last, 1) if to_last and to_last > 0 else None,
        "wall_msgs_per_s": round(delivered / wall, 1) if wall > 0 else None,
        "peak_rss_kib": peak_kib,
    }
    line = json.dumps(rec)
    print(line)
    with open(a.json, "a") as out:
        out.write(line + "\n")
    if proc.returncode not in (0, 75):
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
