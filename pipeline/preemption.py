"""Why a failed Azure ML run failed, and one more try when a low-priority node was taken.

Azure ML does not retry a command node whose low-priority VM is preempted: "These
VMs don't have guaranteed availability and may be preempted while in use. You'll
have to restart a preempted job" (Microsoft Learn, "Create compute clusters", Lower
your compute cluster cost; the earlier "restarted, not resumed" wording was found
untrue in MicrosoftDocs/azure-docs#66288). Only parallel jobs have `retry_settings`,
per mini-batch. The node's error then reads "AzureMLCompute job failed.
PreemptionError: Nodes of this job got pre-empted. ... Reason: Received pre-emption
warning signal" (MicrosoftDocs/azure-docs#66288, microsoft/MLOpsPython#346).

So the service restarts it: when a run's job failed and its run history says
preempted, the same job is submitted again as `<job>-r<n>` (at most
AML_PREEMPTION_RETRIES times), the run id staying the same. Completed nodes of a
deterministic component with unchanged inputs are reused by Azure ML, so in practice
only the preempted node runs again. The retry's name is fixed by the attempt, so two
status checks at once submit it once (the second PUT is "already exists"). A run
whose last attempt still fails says so: its error starts with "preempted:" and
quotes the node's error, in the status routes and the callback.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.aml_jobs import PROP_RUN_ID, job_record
from pipeline.runs import RunRecord

PREEMPTED = "preempted"
PROP_RETRY_OF = "aml_trigger.retry_of"
_PREEMPTION = re.compile(r"pre-?empt", re.IGNORECASE)


def preemption(message: str | None) -> bool:
    return bool(message and _PREEMPTION.search(message))


def retry_name(job_name: str, attempt: int) -> str:
    return f"{job_name}-r{attempt}"


def is_retry(job: Any) -> bool:
    return PROP_RETRY_OF in dict(getattr(job, "properties", None) or {})


def follow(client: Any, job: Any, *, retries: int) -> RunRecord:
    """The run record of `job`, following its preemption retries: a failed attempt
    that was preempted is submitted again (up to `retries` times) and the record is
    the latest attempt's, under the original run id."""
    current, attempt = job, 0
    record = job_record(job)
    while record.status == "failed":
        reason = failure_reason(client, current.name)
        if reason is None:
            break
        record = _with_reason(record, reason, attempt)
        if not reason.startswith(f"{PREEMPTED}:") or attempt >= retries:
            break
        attempt += 1
        current = _attempt(client, job, retry_name(job.name, attempt))
        if current is None:
            break  # the retry could not be read or submitted: the failure stands
        record = job_record(current)
    if current is job:
        return record
    extra = {**record.extra, "job_name": current.name, "preemption_retries": attempt}
    return record.model_copy(update={"run_id": job.name, "extra": extra})


def _attempt(client: Any, original: Any, name: str) -> Any:
    """The retry `name` of `original`: the job if it exists, else submitted now; None
    when it can be neither read nor submitted (the failure stands)."""
    try:
        return get_or_submit(
            client, name, lambda: _copy(client, original, name), experiment=original.experiment_name
        )
    except Exception:  # noqa: BLE001 - the failure stands
        return None


def get_or_submit(client: Any, name: str, build: Any, *, experiment: str | None) -> Any:
    """Job `name` as Azure ML has it, submitted from `build()` first if it does not
    exist yet. The name is fixed by the caller, so two status reads at once submit it
    once: the second PUT is "already exists" and the job is read. Raises what the
    service answered otherwise."""
    try:
        return client.jobs.get(name)
    except Exception as exc:  # noqa: BLE001 - only 404 means "not submitted yet"
        if getattr(exc, "status_code", None) != 404:
            raise
    try:
        return client.jobs.create_or_update(build(), experiment_name=experiment)
    except Exception as exc:  # noqa: BLE001 - a concurrent read submitted it first
        from pipeline.aml_submitter import already_exists

        if not already_exists(exc):
            raise
    return client.jobs.get(name)


def _copy(client: Any, original: Any, name: str) -> Any:
    # A fresh copy of the original to rename (the SDK's job objects do not deep-copy).
    retry = client.jobs.get(original.name)
    retry.name = retry.display_name = name
    # Only our properties are copied: the service's own (start/end times, git) and the
    # read-only studio link describe the failed attempt.
    own = {k: v for k, v in (original.properties or {}).items() if k.startswith("aml_trigger.")}
    retry.properties = {**own, PROP_RUN_ID: name, PROP_RETRY_OF: original.name}
    retry.services = None
    return retry


def _with_reason(record: RunRecord, reason: str, attempts: int) -> RunRecord:
    preempted = reason.startswith(f"{PREEMPTED}:")
    if preempted and attempts:
        reason = f"{reason[:440]} (after {attempts} retr{'y' if attempts == 1 else 'ies'})"
    extra = {**record.extra, "preempted": preempted}
    return record.model_copy(update={"error": reason, "extra": extra})


def failure_reason(client: Any, job_name: str) -> str | None:
    """Why a failed pipeline job failed, from the run history service (where Azure ML
    keeps run errors; the jobs API does not return them): the first failed child's
    error, else the job's own. A preemption reads "preempted: <node>: <error>".
    None when the service says nothing."""
    found: list[tuple[str, str]] = []
    try:
        # The SDK's run-history client (no public getter); reaching it reads the
        # workspace's discovery URL, which can fail like any call.
        runs = client.jobs._runs_operations
        children = list(client.jobs.list(parent_job_name=job_name))
    except Exception:  # noqa: BLE001 - a reason is best effort; the status stands
        return None
    for child in children:
        if str(getattr(child.status, "value", child.status)) != "Failed":
            continue
        message = _run_error(runs, child.name)
        if message:
            node = getattr(child, "display_name", None) or child.name
            found.append((node, message))
    if not found:
        message = _run_error(runs, job_name)
        if message:
            found.append(("", message))
    if not found:
        return None
    preempted = [(n, m) for n, m in found if preemption(m)]
    node, message = (preempted or found)[0]
    text = f"{node}: {message}" if node else message
    return f"{PREEMPTED}: {text}"[:500] if preempted else text[:500]


def _run_error(runs: Any, name: str) -> str | None:
    try:
        details = runs.get_run_details(name)
    except Exception:  # noqa: BLE001 - best effort, see failure_reason
        return None
    error = getattr(getattr(details, "error", None), "error", None)
    if error is None:
        return None
    message = " ".join(str(getattr(error, "message", "") or "").split())
    code = getattr(error, "code", None)
    if code and message and not message.startswith(str(code)):
        return f"{code}: {message}"
    return message or code
