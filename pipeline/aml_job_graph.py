"""On Azure ML a run starts only the nodes that do work for its request.

A job that references the published pipeline component starts every node of it:
all four train slots (three of them only to write {"skipped": true}) and deploy and
smoke test when nothing is deployed. Each node is a container start on the cluster.
So the job is built per request from the published *step* components: the same
nodes, bindings and component versions as the published pipeline component (read
from the workspace, so the job runs what `publish` registered, never the local
YAML), minus the nodes the request cannot use:

- train slots at or past the request's candidate count (select_best's inputs for
  them are optional in its component and left out);
- deploy and smoke_test when deploy_target is `none`.

After a drift skip, nothing: the drift decision (retrain_policy on_drift or
min_new_rows) is taken at run time by check_drift, so it cannot shape one job at
submission. Azure ML's runtime branching (`dsl.condition` / if_else) needs a boolean
*control* output (`is_control: true`) of check_drift, and "Primitive types output
isn't supported" for components (Microsoft Learn, "Manage component and pipeline
inputs and outputs"): the SDK's own expression components run `mldesigner execute`
(azure/ai/ml/entities/_job/pipeline/_pipeline_expression.py), and mldesigner
0.1.0b23 writes the value as the run property `azureml.pipeline.control` through a
PATCH of `history/v1.0/.../experimentids/{exp}/runs/{run}` built from MLflow's
private host credentials (mldesigner/_utils.py, _write_properties_to_run_history;
"TODO(1955852): handle control outputs for mldesigner execute"). A private protocol
that the offline fakes cannot hold against the service is not something to build a
run's correctness on. So such a run is two jobs (pipeline/drift_probe.py): the
PROBE (prep and check_drift; prep writes its output to a datastore path named by
the probe, "Customize output paths" in the same Learn page), then, only when
check_drift decided `retrain`, the TRAINING job: the nodes after check_drift, their
`prepared` input bound to a job input on that path (a datastore path is in that
page's table of input and output locations pipelines support; the
`azureml://jobs/<job>/outputs/<output>` form is documented only as a model's path,
"Work with models"), their optional `drift` input left out (no decision: go on), so
they train on exactly the data check_drift judged, with no second prep.
A schedule's job stays one job (no status read of ours starts a second one), and its
later nodes exit at once on a skip, each saying why, as they do locally.

Pure planning (`plan_nodes`) is separate from the SDK calls (`per_request_job`).
"""

from __future__ import annotations

import re
from typing import Any

WHOLE, PROBE, TRAINING = "whole", "probe", "training"
# The nodes the drift decision needs; the probe job runs only these.
PROBE_NODES = ("prep", "check_drift")
# Probe node outputs the training job reads, as the job inputs that carry them.
HANDED_OVER = {("prep", "prepared"): "prepared"}
# Every workspace has this datastore (Microsoft Learn, "Data concepts in Azure Machine
# Learning", Default datastores); job outputs go there unless told otherwise.
PROBE_DATASTORE = "workspaceblobstore"
_TRAIN_SLOT = re.compile(r"^train(?:_(?P<slot>[1-9]\d*))?$")
_DEPLOY_NODES = ("deploy", "smoke_test")
# select_best's model_<slot> inputs read train slot <slot>'s output; they are optional.
_SELECTION_NODE = "select_best"


def train_slot(node: str) -> int | None:
    """The candidate slot a train node trains (train = 0, train_2 = 2), else None."""
    match = _TRAIN_SLOT.match(node)
    if match is None:
        return None
    return int(match.group("slot") or 0)


def plan_nodes(
    nodes: list[str], *, candidate_count: int, deploy_target: str, phase: str = WHOLE
) -> tuple[list[str], dict[str, set[str]]]:
    """(nodes to run in their order, node -> inputs to leave unbound). `phase` is
    WHOLE (one job), PROBE (the drift probe) or TRAINING (what runs after the probe
    decided `retrain`)."""
    if phase == PROBE:
        return [n for n in nodes if n in PROBE_NODES], {}
    dropped_slots = {
        slot for n in nodes if (slot := train_slot(n)) is not None and slot >= candidate_count
    }
    keep = [
        n
        for n in nodes
        if not ((slot := train_slot(n)) is not None and slot in dropped_slots)
        and not (deploy_target == "none" and n in _DEPLOY_NODES)
        and not (phase == TRAINING and n in PROBE_NODES)
    ]
    unbind = {_SELECTION_NODE: {f"model_{slot}" for slot in dropped_slots}}
    return keep, {k: v for k, v in unbind.items() if v and k in keep}


def can_skip(retrain_policy: str) -> bool:
    """Whether check_drift may decide `skip` under this policy (then the run starts as
    a drift probe)."""
    return retrain_policy != "always"


def probe_output_uri(probe_job: str, output: str) -> str:
    """Where the probe's node writes `output` (a datastore path fixed by the probe's
    job name, so the training job can name it before either job has run)."""
    return f"azureml://datastores/{PROBE_DATASTORE}/paths/aml-trigger/{probe_job}/{output}/"


def planned_nodes(*, candidate_count: int, deploy_target: str, phase: str = WHOLE) -> list[str]:
    """plan_nodes over this checkout's pipeline YAML (a dry run sends nothing, so it
    cannot read the published component; publishing this checkout gives the same)."""
    import yaml

    from pipeline.publish import PIPELINE_YAML

    nodes = list(yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))["jobs"])
    return plan_nodes(
        nodes, candidate_count=candidate_count, deploy_target=deploy_target, phase=phase
    )[0]


def per_request_job(
    client: Any,
    job: Any,
    *,
    component_id: str,
    candidate_count: int,
    deploy_target: str,
    published: dict[str, Any] | None = None,
    phase: str = WHOLE,
    probe_job: str | None = None,
) -> Any:
    """`job` (a PipelineJob of the pipeline component `component_id`) rebuilt as a job
    of that component's step nodes, keeping only those `plan_nodes` keeps for `phase`.
    Inputs, settings, tags, properties, name and experiment are unchanged. A PROBE
    writes what it hands over under its own name; a TRAINING job reads that from
    `probe_job`. `published` caches pipeline components read (a version never changes
    once registered)."""
    from azure.ai.ml import Input, Output
    from azure.ai.ml.entities import Command, PipelineJob

    pipeline = _pipeline_component(client, component_id, {} if published is None else published)
    keep, unbind = plan_nodes(
        list(pipeline.jobs), candidate_count=candidate_count, deploy_target=deploy_target,
        phase=phase,
    )  # fmt: skip
    inputs = {k: _value(v) for k, v in job.inputs.items()}
    handed = {}
    if phase == TRAINING:
        if probe_job is None:
            raise ValueError("a training job after a drift probe needs the probe's job name")
        for (node, output), name in HANDED_OVER.items():
            handed[_node_output(node, output)] = f"${{{{parent.inputs.{name}}}}}"
            inputs[name] = Input(type="uri_folder", path=probe_output_uri(probe_job, output))
    given = set(inputs)
    jobs = {}
    for name in keep:
        node = pipeline.jobs[name]
        bound = {k: _value(v) for k, v in node.inputs.items()}
        # An optional pipeline input the job does not give (dataset_config) leaves the
        # node input bound to it unbound: a job has no pipeline-level input to fall
        # back on, and a binding to a missing parent input is not a value. An input
        # bound to a node this job lacks reads what the probe handed over, or (drift:
        # optional, "no decision" means go on) is left out.
        leave_out = unbind.get(name, set()) | {
            k for k, v in bound.items() if _parent_input(v) not in (None, *given)
        }
        leave_out |= {
            k
            for k, v in bound.items()
            if (source := _source_node(v)) is not None and source not in keep and v not in handed
        }
        rebind = {k: handed[v] for k, v in bound.items() if isinstance(v, str) and v in handed}
        outputs = {}
        if phase == PROBE:
            outputs = {
                output: Output(
                    type="uri_folder", path=probe_output_uri(job.name, output), mode="rw_mount"
                )
                for (node_name, output), _ in HANDED_OVER.items()
                if node_name == name
            }
        if leave_out or rebind or outputs:
            bound = {k: rebind.get(k, v) for k, v in bound.items() if k not in leave_out}
            node = Command(
                component=node.component, inputs=bound, outputs=outputs or None,
                compute=node.compute,
            )  # fmt: skip
        jobs[name] = node
    return PipelineJob(
        name=job.name,
        display_name=job.display_name,
        experiment_name=job.experiment_name,
        jobs=jobs,
        inputs=inputs,
        settings=job.settings,
        tags=dict(job.tags or {}),
        properties=dict(job.properties or {}),
    )


def _node_output(node: str, output: str) -> str:
    return f"${{{{parent.jobs.{node}.outputs.{output}}}}}"


def _source_node(value: Any) -> str | None:
    match = (
        re.fullmatch(r"\$\{\{parent\.jobs\.(\w+)\.outputs\.\w+\}\}", value)
        if isinstance(value, str)
        else None
    )
    return match.group(1) if match else None


def _pipeline_component(client: Any, component_id: str, published: dict[str, Any]) -> Any:
    match = re.search(r"/components/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", component_id)
    if match is None:
        raise ValueError(f"{component_id!r} is not a component version's ARM id")
    key = component_id.lower()
    if key not in published:
        published[key] = client.components.get(match["name"], match["version"])
    return published[key]


def _parent_input(value: Any) -> str | None:
    match = (
        re.fullmatch(r"\$\{\{parent\.inputs\.(\w+)\}\}", value) if isinstance(value, str) else None
    )
    return match.group(1) if match else None


def _value(item: Any) -> Any:
    # PipelineInput / NodeInput wrap the value (literal, binding string or Input).
    return getattr(item, "_data", item)
