"""Pure policies: plain values in, decisions out."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from triggers import policies
from triggers.events import BlobArrival
from triggers.policies import BlobRules, CoalescingWindow, Queue, Skip, Start, Submit
from triggers.schedule import CronSchedule, ScheduleError, resolve_setting


def arrival(name: str, size: int | None = 100) -> BlobArrival:
    return BlobArrival(container="incoming", name=name, etag='"e1"', size=size)


@pytest.mark.parametrize(
    "name", ["drops/a/part-1.csv", "drops/a/part-1.csv.gz", "x.parquet", "drops/A/P.CSV"]
)
def test_data_files_are_data(name):
    assert policies.classify_blob(arrival(name), BlobRules()) == "data"


def test_marker_is_recognised_by_its_configured_name():
    assert policies.classify_blob(arrival("drops/a/_SUCCESS", 0), BlobRules()) == "marker"
    rules = BlobRules(marker_name="READY")
    assert policies.classify_blob(arrival("drops/a/READY", 0), rules) == "marker"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("drops/a/.part-1.csv", "hidden"),
        ("drops/a/~lock.csv", "hidden or temporary"),
        ("drops/a/part-1.csv.tmp", "temporary"),
        ("drops/a/notes.txt", "not data"),
        ("_outputs/run-1/model.parquet", "writes"),
        ("azureml/abc/data.csv", "writes"),
        ("drops/.staging/part.csv", "hidden or underscore folder"),
    ],
)
def test_ignored_blobs_say_why(name, why):
    decision = policies.classify_blob(arrival(name), BlobRules())
    assert isinstance(decision, Skip) and why in decision.reason


def test_prefix_and_size_limits():
    rules = BlobRules(prefix="drops/", max_bytes=1000)
    assert isinstance(policies.classify_blob(arrival("other/a.csv"), rules), Skip)
    big = policies.classify_blob(arrival("drops/a.csv", 1001), rules)
    assert isinstance(big, Skip) and "BLOB_MAX_BYTES=1000" in big.reason
    assert isinstance(policies.classify_blob(arrival("drops/a.csv", 0), rules), Skip)


def test_quiet_window_fires_after_silence():
    window = CoalescingWindow(quiet_s=30, max_delay_s=600)
    assert isinstance(window.decide(first_seen=0, last_seen=10, now=39), Skip)
    assert isinstance(window.decide(first_seen=0, last_seen=10, now=40), Submit)


def test_steady_trickle_cannot_postpone_a_drop_past_the_max_delay():
    window = CoalescingWindow(quiet_s=30, max_delay_s=600)
    first = 0.0
    # a blob every 10 s keeps the quiet window from ever closing...
    for now in range(10, 600, 10):
        assert isinstance(window.decide(first_seen=first, last_seen=now, now=now), Skip)
    # ...but the max delay does.
    decision = window.decide(first_seen=first, last_seen=600, now=600)
    assert isinstance(decision, Submit) and "max delay" in decision.reason


def test_batch_modes():
    assert policies.blob_decision("marker", "window") == "run-now"
    assert policies.blob_decision("marker", "each") == "run-now"
    assert policies.blob_decision("data", "window") == "collect"
    assert policies.blob_decision("data", "marker") == "collect"
    assert policies.blob_decision("data", "each") == "run-blob"


def test_admission_starts_under_the_limit_then_queues_or_skips():
    empty = policies.Slots()
    first = policies.admit(empty, "a", limit=1, policy="queue")
    assert first.decision == Start() and first.slots == policies.Slots(active=("a",))
    second = policies.admit(first.slots, "b", limit=1, policy="queue")
    assert isinstance(second.decision, Queue) and second.slots.queue == ("b",)
    skipped = policies.admit(policies.Slots(active=("a", "b")), "c", limit=2, policy="skip")
    assert isinstance(skipped.decision, Skip) and "MAX_CONCURRENT_RUNS=2" in skipped.decision.reason
    assert skipped.slots == policies.Slots(active=("a", "b"))  # a skipped key leaves no trace


def test_a_request_never_overtakes_queued_runs_when_a_slot_frees():
    slots = policies.Slots(active=("a",), queue=("b", "c"))
    change = policies.admit(slots, "d", limit=1, policy="queue", ended=frozenset({"a"}))
    assert change.promoted == ("b",)  # the oldest waiting run takes the freed slot
    assert isinstance(change.decision, Queue)
    assert change.slots == policies.Slots(active=("b",), queue=("c", "d"))


def test_refill_frees_ended_holders_and_promotes_first_in_first_out():
    slots = policies.Slots(active=("a", "b"), queue=("c", "d", "e"))
    change = policies.refill(slots, limit=2, ended=frozenset({"a", "b"}))
    assert change.promoted == ("c", "d")
    assert change.slots == policies.Slots(active=("c", "d"), queue=("e",))
    assert policies.refill(change.slots, limit=2).promoted == ()  # still full


def test_admission_replayed_gives_the_same_decision():
    once = policies.admit(policies.Slots(active=("x",)), "a", limit=1, policy="queue")
    twice = policies.admit(once.slots, "a", limit=1, policy="queue")
    assert twice.slots == once.slots and isinstance(twice.decision, Queue)


def test_withdraw_takes_a_key_out_of_queue_and_slots():
    slots = policies.Slots(active=("a",), queue=("b", "c"))
    assert policies.withdraw(slots, "b") == policies.Slots(active=("a",), queue=("c",))
    assert policies.Slots.from_doc(slots.to_doc()) == slots


def test_blob_key_is_container_name_and_etag():
    assert policies.blob_key("incoming", "a/b.csv", '"0x8D"') == "blob:incoming/a/b.csv@0x8D"


def test_drop_key_changes_with_content_not_with_order():
    one = policies.drop_key("c", "d/", {"d/1.csv": "e1", "d/2.csv": "e2"})
    same = policies.drop_key("c", "d/", {"d/2.csv": "e2", "d/1.csv": "e1"})
    rewritten = policies.drop_key("c", "d/", {"d/1.csv": "e1", "d/2.csv": "e3"})
    assert one == same != rewritten


def test_http_key_prefers_the_header_else_the_body_and_day():
    body = {"data": "", "reason": "x", "dry_run": False}
    day = date(2026, 11, 22)
    assert policies.http_key("abc", body, day) == "http:abc"
    derived = policies.http_key(None, body, day)
    assert derived == policies.http_key(None, {**body, "dry_run": True}, day)
    assert derived != policies.http_key(None, {**body, "reason": "y"}, day)
    assert derived != policies.http_key(None, body, date(2026, 11, 23))


def test_timer_key_names_the_occurrence():
    when = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    key = policies.timer_key("scheduled_retrain", when)
    assert key == "timer:scheduled_retrain@2026-11-22T02:00:00Z"


@pytest.mark.parametrize("value", ["", "x" * 201, "has space", "tab\t"])
def test_bad_idempotency_keys_are_named(value):
    assert "Idempotency-Key" in policies.check_idempotency_key(value)


# --- NCRONTAB ---------------------------------------------------------------------------
NOW = datetime(2026, 11, 22, 7, 50, 13, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(
    ("text", "after", "before"),
    [
        ("0 0 2 * * *", "2026-11-23T02:00:00", "2026-11-22T02:00:00"),
        ("*/15 * * * * *", "2026-11-22T07:50:15", "2026-11-22T07:50:00"),
        ("0 30 9 * * MON-FRI", "2026-11-23T09:30:00", "2026-11-20T09:30:00"),
        ("0 0 0 1 JAN,JUL *", "2027-01-01T00:00:00", "2026-07-01T00:00:00"),
        ("0 0 12 * * 0", "2026-11-22T12:00:00", "2026-11-15T12:00:00"),
        ("0 0 12 * * 7", "2026-11-22T12:00:00", "2026-11-15T12:00:00"),
    ],
)
def test_ncrontab_next_and_previous(text, after, before):
    schedule = CronSchedule.parse(text)
    assert schedule.next_after(NOW) == datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert schedule.latest_at_or_before(NOW) == datetime.fromisoformat(before).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 2 * * *", "has 5 fields; NCRONTAB needs 6"),
        ("0 0 25 * * *", "hour '25' is not in 0-23"),
        ("0 0 2 * FOO *", "month 'FOO' is not in 1-12 or JAN..DEC"),
        ("*/0 * * * * *", "second step '0'"),
        ("0 0 5-2 * * *", "runs backwards"),
    ],
)
def test_bad_schedules_say_what_is_accepted(text, message):
    with pytest.raises(ScheduleError, match=message):
        CronSchedule.parse(text)


def test_schedule_settings_are_resolved_and_missing_ones_named():
    assert resolve_setting("%TRAIN_SCHEDULE%", {"TRAIN_SCHEDULE": "0 0 2 * * *"}) == "0 0 2 * * *"
    with pytest.raises(ScheduleError, match="'TRAIN_SCHEDULE'"):
        resolve_setting("%TRAIN_SCHEDULE%", {})


def test_an_open_window_says_how_long_to_wait_never_past_the_max_delay():
    window = CoalescingWindow(quiet_s=30, max_delay_s=600)
    waiting = window.decide(first_seen=0, last_seen=10, now=15)
    assert isinstance(waiting, policies.Wait) and waiting.delay_s == 25
    near_max = window.decide(first_seen=0, last_seen=590, now=595)
    assert isinstance(near_max, policies.Wait) and near_max.delay_s == 5  # not 25


def test_a_timer_occurrence_asks_for_one_run_keyed_by_the_occurrence():
    at = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    run = policies.scheduled_retrain("nightly", at, past_due=True, data="train/")
    assert run == Submit(
        "timer:nightly@2026-11-22T02:00:00Z",
        data="train/",
        reason="scheduled retrain 2026-11-22 02:00:00Z (past due: the host was down at that time)",
    )
