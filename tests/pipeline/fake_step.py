"""A tiny step for test pipelines: records what it did, waits, fails on request."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--after", type=Path, action="append", default=[])
parser.add_argument("--journal", type=Path)
parser.add_argument("--touch", type=Path)
parser.add_argument("--wait-for", type=Path)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--fail")
parser.add_argument("--crash", action="store_true")
parser.add_argument("--summary")
parser.add_argument("--echo", action="append", default=[])
parser.add_argument("--data", type=Path)
args = parser.parse_args()

for upstream in args.after:
    if not (upstream / "summary.json").is_file():
        print(f"error: upstream output {upstream} has no summary.json", file=sys.stderr)
        sys.exit(2)
if args.journal:
    with open(args.journal, "a") as journal:
        journal.write(f"start {args.name} {os.getpid()}\n")
print(f"{args.name}: working", flush=True)
if args.touch:
    args.touch.write_text("here")
if args.wait_for:
    deadline = time.monotonic() + 10
    while not args.wait_for.exists():
        if time.monotonic() > deadline:
            print(f"error: {args.wait_for} never appeared", file=sys.stderr)
            sys.exit(2)
        time.sleep(0.01)
time.sleep(args.sleep)
if args.crash:
    raise RuntimeError(f"{args.name} crashed on purpose")
if args.fail:
    print("some progress on stderr", file=sys.stderr)
    print(f"error: {args.fail}", file=sys.stderr)
    print("a line after the error", file=sys.stderr)
    sys.exit(2)
args.out.mkdir(parents=True, exist_ok=True)
summary = json.loads(args.summary) if args.summary else {"node": args.name}
summary["echo"] = args.echo
if args.data is not None:
    summary["data_files"] = sorted(
        p.relative_to(args.data).as_posix() for p in args.data.rglob("*") if p.is_file()
    )
(args.out / "summary.json").write_text(json.dumps(summary))
if args.journal:
    with open(args.journal, "a") as journal:
        journal.write(f"end {args.name}\n")
