"""`python -m bench [SUITE ...]`: run benchmarks (all suites by default), print figures.

`make bench` runs them all on 600,000 generated rows. Figures are for comparison
within one run (ratios to a baseline measured alongside); the machine is shared.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

SUITES = (
    "pipeline", "train", "imports", "http", "telemetry", "blob", "drift", "batch", "sweep",
    "idle",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES)}")
    parser.add_argument("--rows", type=int, default=600_000, help="generated rows (default 600k)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    suites = args.suites or list(SUITES)
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    work = Path(tempfile.mkdtemp(prefix="aml-trigger-bench-"))
    try:
        if "pipeline" in suites:
            from bench import pipeline, scoring

            data, home = work / "data", work / "home"
            seconds = pipeline.generate(args.rows, args.seed, data)
            print(f"== generated {args.rows:,} rows x 57 features in {seconds:.1f} s")
            record = pipeline.run_pipeline(data, home)
            pipeline.report(record)
            pipeline.baselines(record, home)
            try:
                scoring.main(record, home, data)
            finally:
                from steps.local_endpoint import stop_all

                stop_all(home)
        if "train" in suites:
            from bench import train_step

            train_step.main(args.rows, args.seed, work / "train")
        if "imports" in suites:
            from bench import imports

            imports.main()
        if "http" in suites:
            from bench import http_api

            http_api.main()
        if "telemetry" in suites:
            from bench import telemetry

            telemetry.main()
        if "blob" in suites:
            from bench import blob_detect

            blob_detect.main()
        if "drift" in suites:
            from bench import drift

            drift.main(args.rows, args.seed, work / "drift")
        if "batch" in suites:
            from bench import batch_score

            batch_score.main(args.rows, args.seed, work / "batch")
        if "sweep" in suites:
            from bench import sweep

            sweep.main(args.rows, args.seed, work / "sweep")
        if "idle" in suites:
            from bench import idle

            idle.main()
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
