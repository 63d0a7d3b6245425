#!/usr/bin/env python3
"""Turn a JUnit XML report (pytest --junitxml) into Markdown and CI annotations.

GitHub Actions shows Markdown appended to $GITHUB_STEP_SUMMARY on the run's page,
and `::error title=...::message` lines as annotations on the pull request. This
needs no token and no third-party action, so it also works for pull requests from
forks, whose tokens cannot write check runs. Standard library only.

    python3 scripts/junit_summary.py test-results/junit.xml >> "$GITHUB_STEP_SUMMARY"
    python3 scripts/junit_summary.py test-results/junit.xml --annotations

Exit code 0 when the report was read (whatever the tests did: the test step itself
fails the job), 2 when it is missing or not JUnit XML.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

MAX_LISTED = 50  # failures listed in the summary; the rest are counted


@dataclass
class Report:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (test, kind, message)


def read_report(path: str) -> Report:
    root = ET.parse(path).getroot()  # noqa: S314 (our own test report)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuite", "testsuites"):
        raise ValueError(f"root element is <{root.tag}>, not <testsuites> or <testsuite>")
    report = Report()
    for suite in suites:
        for case in suite.iter("testcase"):
            report.tests += 1
            report.seconds += float(case.get("time") or 0)
            name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
            for kind in ("failure", "error"):
                node = case.find(kind)
                if node is not None:
                    setattr(report, kind + "s", getattr(report, kind + "s") + 1)
                    message = node.get("message") or (node.text or "").strip()
                    report.failed.append((name, kind, message.splitlines()[0] if message else ""))
            if case.find("skipped") is not None:
                report.skipped += 1
    return report


def markdown(report: Report, title: str) -> str:
    bad = report.failures + report.errors
    passed = report.tests - bad - report.skipped
    verdict = "passed" if bad == 0 else "FAILED"
    lines = [
        f"### {title}: {verdict}",
        "",
        "| tests | passed | failed | errors | skipped | time |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {report.tests} | {passed} | {report.failures} | {report.errors} | "
        f"{report.skipped} | {report.seconds:.1f}s |",
    ]
    if report.failed:
        lines += ["", "| test | | message |", "|---|---|---|"]
        for name, kind, message in report.failed[:MAX_LISTED]:
            lines.append(f"| `{name}` | {kind} | {_cell(message)} |")
        if len(report.failed) > MAX_LISTED:
            lines.append(f"| ... and {len(report.failed) - MAX_LISTED} more | | |")
    return "\n".join(lines) + "\n"


def annotations(report: Report) -> list[str]:
    return [
        f"::error title={_escape(name, prop=True)}::{_escape(message or kind)}"
        for name, kind, message in report.failed[:MAX_LISTED]
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _escape(text: str, *, prop: bool = False) -> str:
    # GitHub workflow command escaping (percent first).
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="JUnit XML -> Markdown summary (+ annotations).")
    parser.add_argument("report", help="JUnit XML file, e.g. test-results/junit.xml")
    parser.add_argument("--title", default="Tests", help="Heading of the summary.")
    parser.add_argument(
        "--annotations",
        action="store_true",
        help="Print GitHub ::error workflow commands (one per failed test) instead.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = read_report(args.report)
    except (OSError, ET.ParseError, ValueError) as exc:
        print(f"error: {args.report}: cannot read a JUnit report: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.annotations:
        sys.stdout.write("".join(line + "\n" for line in annotations(report)))
    else:
        sys.stdout.write(markdown(report, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
