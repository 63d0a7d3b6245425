"""scripts/junit_summary.py on a report pytest really wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "junit_summary.py"

SAMPLE_TESTS = """
import pytest

def test_ok():
    assert True

def test_broken():
    assert 1 + 1 == 3, "arithmetic | is off"

@pytest.mark.skip(reason="not today")
def test_later():
    pass
"""


def summarize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_markdown_and_annotations_from_a_real_pytest_report(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE_TESTS)
    report = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path / "test_sample.py")],
        capture_output=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    md = summarize(str(report), "--title", "Tests (3.11)")
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("### Tests (3.11): FAILED")
    assert "| 3 | 1 | 1 | 0 | 1 |" in md.stdout  # tests, passed, failed, errors, skipped
    assert "`test_sample::test_broken` | failure | AssertionError: arithmetic \\| is off" in (
        md.stdout
    )
    notes = summarize(str(report), "--annotations")
    assert notes.stdout.splitlines() == [
        "::error title=test_sample%3A%3Atest_broken::AssertionError: arithmetic | is off"
    ]


def test_a_missing_or_foreign_report_exits_2_naming_it(tmp_path):
    missing = summarize(str(tmp_path / "nope.xml"))
    assert missing.returncode == 2 and "nope.xml: cannot read a JUnit report" in missing.stderr
    other = tmp_path / "other.xml"
    other.write_text("<coverage/>")
    foreign = summarize(str(other))
    assert foreign.returncode == 2 and "root element is <coverage>" in foreign.stderr
