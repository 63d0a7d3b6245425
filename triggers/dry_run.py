"""DryRunPlan: the answer to `dry_run: true`, its own documented schema.

The submitter's `describe` is for the operator (the CLI prints it whole: step
command lines, log files, local paths). Over HTTP a key holder gets the plan
instead: which run it would be, which steps or Azure ML jobs, with which inputs,
and no server paths (triggers/disclosure.py) or command lines.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from triggers.disclosure import Disclosure, shown_request

InputValue = str | int | float | bool | None


class PlannedStep(BaseModel):
    name: str = Field(description="The pipeline node.")
    component: str = Field(description="The component it runs.")
    depends_on: list[str] = Field(default_factory=list, description="Nodes it waits for.")


class PlannedJob(BaseModel):
    name: str = Field(description="The Azure ML job name the run would get.")
    compute: str | None = Field(None, description="Its compute target.")
    job_yaml: str | None = Field(
        None, description="The job as Azure ML job YAML (what `az ml job create -f` reads)."
    )


class DryRunPlan(BaseModel):
    """What a request would start, validated against the backend, nothing recorded."""

    dry_run: Literal[True] = Field(True, description="Always true: nothing was submitted.")
    run_id: str = Field(description="The run id the same request would get if submitted.")
    backend: Literal["local", "aml"]
    mode: Literal["local_pipeline", "pipeline_job", "batch_endpoint"] = Field(
        description="Local executor, Azure ML pipeline job, or Azure ML batch endpoint."
    )
    experiment: str | None = None
    pipeline: str | None = Field(None, description="The pipeline's name (local backend).")
    inputs: dict[str, InputValue] = Field(
        default_factory=dict,
        description="The pipeline's inputs; paths relative to AML_TRIGGER_HOME.",
    )
    steps: list[PlannedStep] = Field(
        default_factory=list, description="The steps in execution order (local backend)."
    )
    jobs: list[PlannedJob] = Field(
        default_factory=list, description="The Azure ML job(s); several for a compute fan-out."
    )
    nodes: list[str] = Field(
        default_factory=list,
        description="The pipeline nodes an Azure ML submission would start (the job YAML "
        "names the whole pipeline component).",
    )
    nodes_after_retrain_decision: list[str] | None = Field(
        None,
        description="For a drift probe (Azure ML, a retrain policy that can skip): the "
        "nodes of the training job submitted only when the probe decides to retrain.",
    )
    endpoint: str | None = Field(None, description="The batch endpoint (batch mode).")
    deployment: str | None = Field(None, description="Its deployment (batch mode).")
    request: dict[str, Any] = Field(
        description="The request as validated, every default filled in (callback_url shown "
        "as scheme, host and path)."
    )


def plan(description: dict[str, Any], *, request: dict[str, Any], disclosure: Disclosure):
    """The public plan of a submitter's `describe` output."""
    backend = description.get("backend", "local")
    mode = description.get("mode") or "local_pipeline"
    single = {
        "name": description.get("run_id"),
        "compute": _first_compute(request.get("compute")),  # None: AML_COMPUTE
        "job_yaml": description.get("job_yaml"),
    }
    jobs = description.get("jobs") or ([single] if description.get("job_yaml") else [])
    return DryRunPlan(
        run_id=description["run_id"],
        backend=backend,
        mode=mode,
        experiment=description.get("experiment") or request.get("experiment"),
        pipeline=description.get("pipeline"),
        inputs={k: _scalar(v) for k, v in disclosure.value(description.get("inputs", {})).items()},
        steps=[
            PlannedStep(name=s["name"], component=s["component"], depends_on=s["depends_on"])
            for s in description.get("steps", [])
        ],
        jobs=[
            PlannedJob(
                name=j["name"], compute=j.get("compute"), job_yaml=disclosure.value(j["job_yaml"])
            )
            for j in jobs
        ],
        nodes=[str(n) for n in description.get("nodes", [])],
        nodes_after_retrain_decision=_nodes_or_none(
            description.get("nodes_after_retrain_decision")
        ),
        endpoint=description.get("endpoint"),
        deployment=description.get("deployment"),
        request=shown_request(request) or {},
    )


def _nodes_or_none(nodes: Any) -> list[str] | None:
    return None if nodes is None else [str(n) for n in nodes]


def _first_compute(compute: Any) -> str | None:
    """A training request names a list of computes, a verification one compute."""
    if isinstance(compute, list):
        return compute[0] if compute else None
    return compute if isinstance(compute, str) else None


def _scalar(value: Any) -> InputValue:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
