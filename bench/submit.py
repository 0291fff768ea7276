#!/usr/bin/env python3
"""Submission benchmark: N messages through a sendmail-like command, P submitters at once.

  submit.py --count 1000 --parallel 8 --engine mailq --label L --json FILE -- CMD [ARGS...]

Each submission runs CMD ARGS RCPT with a 2 KB message on standard input (RCPT is
bench-<n>@bench.localhost), as a web application or a cron job calls sendmail. Every call is
timed on its own (fork to exit); a call that exits non-zero or runs past 60 s is a failure.
Prints one JSON line (rate over the wall time, p50/p99/max per call, failures with the first
error) and appends it to FILE.
"""
import argparse
import concurrent.futures
import json
import subprocess
import sys
import time


def message(n):
    body = ("x" * 76 + "\n") * 24  # 2 KB with the headers
    return (f"From: bench@bench.localhost\nTo: bench-{n}@bench.localhost\n"
            f"Subject: submission {n}\nMessage-ID: <submit-{n}@bench.localhost>\n"
            f"Date: Mon, 07 Dec 2026 00:00:00 +0000\n\n{body}").encode()


def one(cmd, n):
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd + [f"bench-{n}@bench.localhost"], input=message(n),
                           capture_output=True, timeout=60)
        ok, err = p.returncode == 0, p.stderr.decode(errors="replace").strip()
        if not ok and not err:
            err = f"exit {p.returncode}"
    except subprocess.TimeoutExpired:
        ok, err = False, "ran past 60 s"
    return time.perf_counter() - t0, ok, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("the command is missing (after --)")
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(a.parallel) as ex:
        results = list(ex.map(lambda n: one(cmd, n), range(a.count)))
    wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in results)
    failed = [r[2] for r in results if not r[1]]

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    row = {"bench": "submit", "engine": a.engine, "label": a.label, "messages": a.count,
           "parallel": a.parallel, "seconds": round(wall, 4),
           "msgs_per_s": round(a.count / wall, 1), "p50_ms": round(pct(0.5), 2),
           "p99_ms": round(pct(0.99), 2), "max_ms": round(lat[-1] * 1000, 2),
           "failures": len(failed), "first_error": failed[0][:200] if failed else ""}
    line = json.dumps(row)
    print(line)
    if a.json:
        with open(a.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
