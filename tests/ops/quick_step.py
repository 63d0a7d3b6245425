"""A quick pipeline step for the ops tests: writes its output, or fails on a seed.

It stands in for a training step so that `aml-trigger wait` and the HTTP trigger
script follow a real local run (worker process, run store, host) in a second.
"""

import argparse
import json
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--fail-seed", type=int, default=13)
parser.add_argument("--slow-seed", type=int, default=7)
parser.add_argument("--upstream", type=Path)
args = parser.parse_args()

if args.upstream is not None and not (args.upstream / "summary.json").is_file():
    print(f"error: upstream output {args.upstream} has no summary.json", file=sys.stderr)
    sys.exit(2)

time.sleep(30.0 if args.seed == args.slow_seed else 0.2)
if args.seed == args.fail_seed:
    print(f"error: {args.name} refused seed {args.seed}", file=sys.stderr)
    sys.exit(2)
args.out.mkdir(parents=True, exist_ok=True)
(args.out / "summary.json").write_text(json.dumps({"node": args.name}))
