"""One timestamp format for every run, whoever recorded it: RFC 3339, UTC, ms."""

from __future__ import annotations

import pytest

from pipeline.runs import RunRecord, StepRecord, rfc3339


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("2017-06-26T18:41:00.9584103Z", "2017-06-26T18:41:00.958Z"),  # Event Grid's 7 digits
        ("2026-11-22T08:00:00+00:00", "2026-11-22T08:00:00.000Z"),  # azure-ai-ml datetimes
        ("2026-11-22T10:00:00.5+02:00", "2026-11-22T08:00:00.500Z"),  # an offset: to UTC
        ("2026-11-22T08:00:00", "2026-11-22T08:00:00.000Z"),  # naive: UTC
        (1_800_000_000.25, "2027-01-15T08:00:00.250Z"),  # the ledger's epoch seconds
    ],
)
def test_times_are_rfc3339_utc_milliseconds(given, shown):
    assert rfc3339(given) == shown


def test_run_and_step_records_show_every_time_in_the_one_format():
    record = RunRecord(
        run_id="run-abc",
        status="completed",
        created_at="2026-11-22T08:00:00+00:00",
        started_at="2026-11-22T08:00:01.123456+00:00",
        finished_at="2026-11-22T08:05:00Z",
        steps=[StepRecord(name="prep", started_at="2026-11-22T08:00:02+00:00")],
    )
    assert record.created_at == "2026-11-22T08:00:00.000Z"
    assert record.started_at == "2026-11-22T08:00:01.123Z"
    assert record.finished_at == "2026-11-22T08:05:00.000Z"
    assert record.steps[0].started_at == "2026-11-22T08:00:02.000Z"
    assert record.model_dump(mode="json")["created_at"] == record.created_at
