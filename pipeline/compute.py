"""Which cluster each step group of a training run uses, and why a failed run failed.

Step groups: `prep_compute` runs prep, check_drift and score_champion (the cheap
CPU work), `train_compute` runs the train slots; every other node runs on the job's
default compute. The pipeline component promotes both to pipeline inputs
(`compute: ${{parent.inputs.train_compute}}`, as Microsoft Learn's "Use pipeline
components" shows), so the job body carries them as inputs.

Low-priority preemption. Azure ML does not retry a command node whose low-priority
node was taken back: "These VMs don't have guaranteed availability and may be
preempted while in use. You'll have to restart a preempted job"
(how-to-create-attach-compute-cluster, "Lower your compute cluster cost"; the older
"restarted, not resumed" wording was corrected after MicrosoftDocs/azure-docs#66288).
Only parallel jobs have `retry_settings` (per mini-batch). So a preempted run fails,
and the run says so: its error starts with "preempted:" and quotes the node's error,
e.g. "AzureMLCompute job failed. PreemptionError: Nodes of this job got pre-empted.
... Reason: Received pre-emption warning signal" (as reported in
MicrosoftDocs/azure-docs#66288 and microsoft/MLOpsPython#346).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.request import TrainingRequest
from pipeline.runs import RunRecord
from pipeline.settings import Settings

PREP_NODES = ("prep", "check_drift", "score_champion")
TRAIN_NODES = ("train", "train_1", "train_2", "train_3")
PREEMPTED = "preempted"
_PREEMPTION = re.compile(r"pre-?empt", re.IGNORECASE)


def step_computes(
    request: TrainingRequest, settings: Settings, compute: str, *, fanned_out: bool
) -> dict[str, str]:
    """The pipeline's prep_compute and train_compute inputs for a job whose default
    compute is `compute`. In a fan-out the computes compared are the training ones,
    so each job trains on its own `compute`; prep still follows the request/setting."""
    prep = request.prep_compute or settings.aml_prep_compute or compute
    if fanned_out:
        train = compute
    else:
        train = request.train_compute or settings.aml_train_compute or compute
    return {"prep_compute": prep, "train_compute": train}


def preemption(message: str | None) -> bool:
    return bool(message and _PREEMPTION.search(message))


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


def explain_failure(client: Any, record: RunRecord) -> RunRecord:
    """A failed run's record with its reason from the run history; others unchanged."""
    if record.status != "failed":
        return record
    reason = failure_reason(client, record.extra.get("job_name") or record.run_id)
    if reason is None:
        return record
    extra = {**record.extra, "preempted": reason.startswith(f"{PREEMPTED}:")}
    return record.model_copy(update={"error": reason, "extra": extra})


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
