"""AmlSubmitter: runs the training pipeline on Azure ML (the scale-out engine).

A run is a pipeline job built from the REGISTERED pipeline component
(AML_PIPELINE_COMPONENT, published by `aml-trigger publish`), named by the run id.
The run id comes from the idempotency key, so a retried or redelivered submission
names the same job and Azure ML refuses to start it twice (HTTP 409): that is
"already submitted", and the existing job is returned. Several compute targets fan
out into one job per compute, `<run_id>-<compute>`, sharing the comparison group
`run_id`. A request whose retrain policy can skip starts as a drift probe, and its
training job follows only on `retrain` (pipeline/drift_probe.py). With
AML_BATCH_ENDPOINT set, runs invoke a pipeline-component deployment of a batch
endpoint instead (the v2 successor of published pipeline endpoints).

azure.ai.ml is imported inside methods only: importing it costs over a second and
the Functions app must stay light at load.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from pipeline.aml_client import (
    WORKSPACE_SETTINGS,
    build_ml_client,
    require_settings,
    to_submission_error,
)
from pipeline.aml_jobs import (
    PROP_GROUP,
    PROP_RUN_ID,
    TAG_CODE_VERSION,
    TAG_KEY,
    TAG_ORIGINATOR,
    TAG_REASON,
    TAG_TRIGGER,
    group_record,
    job_record,
    pipeline_job,
)
from pipeline.aml_verification import describe_verification, submit_verification
from pipeline.compute import step_computes
from pipeline.drift_probe import after_probe, is_drift_probe, is_training, training_job
from pipeline.preemption import follow, is_retry
from pipeline.request import TrainingRequest
from pipeline.runs import RUN_ID_PATTERN, RunRecord
from pipeline.settings import Settings
from pipeline.submitter import RunNotFound, SubmissionError
from pipeline.verification import VerificationRequest

_ARM_COMPONENT = re.compile(
    r"^(?:azureml:)?(/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.MachineLearningServices/(?:workspaces|registries)/[^/]+/components/"
    r"(?P<name>[^/]+)/versions/(?P<version>[^/]+))$",
    re.IGNORECASE,
)
_NAME_VERSION = re.compile(r"^(?:azureml:)?(?P<name>[A-Za-z0-9_.-]+)(?::(?P<version>[^:@/]+))?$")


def parse_component(value: str) -> tuple[str, str | None, str | None]:
    """AML_PIPELINE_COMPONENT as (name, version or None, ARM id or None)."""
    text = value.strip()
    if m := _ARM_COMPONENT.match(text):
        return m.group("name"), m.group("version"), m.group(1)
    if m := _NAME_VERSION.match(text):
        return m.group("name"), m.group("version"), None
    raise SubmissionError(
        "not_configured",
        f"AML_PIPELINE_COMPONENT {value!r} is not a component reference: give `name`, "
        "`name:version` or the component version's full ARM id",
    )


class AmlSubmitter:
    backend = "aml"

    def __init__(
        self,
        settings: Settings,
        *,
        credential: Any = None,
        transport: Any = None,
        retry_total: int | None = None,
        retry_backoff_factor: float | None = None,
        timeout: float | None = None,
        ml_client: Any = None,
    ) -> None:
        self.settings = settings
        self._credential = credential
        self._transport = transport
        self._retry: dict[str, Any] = {}
        if retry_total is not None:
            self._retry["retry_total"] = retry_total
        if retry_backoff_factor is not None:
            self._retry["retry_backoff_factor"] = retry_backoff_factor
        if timeout is not None:
            self._retry["timeout"] = timeout
        self._client = ml_client

    @property
    def workspace(self) -> str | None:
        return self.settings.aml_workspace

    @property
    def batch_mode(self) -> bool:
        return bool(self.settings.aml_batch_endpoint)

    def submission_settings(self) -> list[str]:
        """The settings a submission needs (status, cancel and schedules need only the
        workspace)."""
        names = list(WORKSPACE_SETTINGS)
        if not self.batch_mode:
            names.append("AML_PIPELINE_COMPONENT")
        return names

    def client(self, *, for_submission: bool = False) -> Any:
        if for_submission:
            require_settings(self.settings, self.submission_settings())
        if self._client is None:
            self._client = build_ml_client(
                self.settings,
                credential=self._credential,
                transport=self._transport,
                polling_interval=0 if self._transport is not None else None,
                **self._retry,
            )
        return self._client

    # -- the Submitter protocol ----------------------------------------------------
    def submit(
        self,
        request: TrainingRequest,
        *,
        run_id: str,
        trigger: str,
        idempotency_key: str | None = None,
        dataset_config: str | None = None,
    ) -> RunRecord:
        """Start the run's job(s); a job that already exists is returned as it is.
        `dataset_config` is an azureml:// URI or a path in the incoming datastore."""
        _check_run_id(run_id)
        if isinstance(request, VerificationRequest):
            return submit_verification(
                self, request, run_id=run_id, trigger=trigger, idempotency_key=idempotency_key
            )
        refuse_what_aml_cannot_run(request)
        client = self.client(for_submission=True)
        if self.batch_mode:
            return self._invoke_batch(client, request, run_id, trigger, idempotency_key)
        component_id, version = self.resolve_component(client)
        plans = self.plans(request, run_id)
        records = []
        for name, compute in plans:
            job = self.build_job(
                request,
                name=name,
                run_id=run_id,
                compute=compute,
                trigger=trigger,
                idempotency_key=idempotency_key,
                component_id=component_id,
                code_version=version,
                dataset_config=dataset_config,
            )
            job = self._working_nodes_only(client, job, request, component_id)
            records.append(self._create(client, job, request.experiment))
        if len(records) == 1:
            record = records[0]
        else:
            record = group_record(run_id, records)
        return record.model_copy(update={"request": request.model_dump(mode="json")})

    def get(self, run_id: str, *, with_steps: bool = True) -> RunRecord:
        """The run; `with_steps` also reads its steps from the child jobs."""
        client = self.client()
        try:
            job = client.jobs.get(run_id)
        except Exception as exc:  # noqa: BLE001 - mapped below
            if not _is_not_found(exc):
                raise self._error(exc, f"reading run {run_id}") from None
        else:
            from pipeline.aml_steps import ChildRuns

            children = ChildRuns(client)  # a probe's are read for its decision and steps
            record = self._followed(client, job, children)
            return self._with_steps(client, record, children) if with_steps else record
        # A member's preemption retries and training job carry the group too; they are
        # followed from it.
        members = [j for j in self._group_jobs(client, run_id) if not _follows_up(j)]
        if not members:
            raise RunNotFound(run_id)
        return group_record(run_id, [self._followed(client, j) for j in members])

    def _followed(self, client: Any, job: Any, children: Any = None) -> RunRecord:
        """The job's record, its failure explained and a preempted attempt retried; a
        drift probe's is the run's: completed on a skip, else its training job's
        (submitted once the probe decided `retrain`: pipeline/drift_probe.py)."""
        retries = self.settings.aml_preemption_retries
        record = follow(client, job, retries=retries)
        if not is_drift_probe(job):
            return record
        return after_probe(
            client,
            job,
            record,
            follow=lambda c, j: follow(c, j, retries=retries),
            build_training=lambda: training_job(client, job, published=self._published()),
            children=children,
        )

    def _published(self) -> dict[str, Any]:
        """Pipeline components read, by ARM id (a version never changes once published)."""
        return self.__dict__.setdefault("_published_pipelines", {})

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """The newest pipeline jobs this service submitted (one record per job)."""
        client = self.client()
        try:
            jobs = list(
                itertools.islice(
                    client.jobs.list(properties=PROP_RUN_ID, job_type="Pipeline"), limit
                )
            )
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._error(exc, "listing runs") from None
        # A drift probe is listed as its run (its training job read through it).
        records = [
            self._listed(client, job) for job in jobs if job is not None and not is_training(job)
        ]
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def cancel(self, run_id: str) -> RunRecord:
        """Ask Azure ML to cancel the run's job(s) and return at once (no waiting for
        the job to stop; its state reads CancelRequested, i.e. running, until then)."""
        client = self.client()
        record = self.get(run_id, with_steps=False)
        # The latest attempt of each job (a preemption retry has its own name).
        names = [j.get("job_name") or j["name"] for j in record.extra.get("jobs", [])] or [
            record.extra.get("job_name") or run_id
        ]
        for name in names:
            try:
                client.jobs.begin_cancel(name, polling=False)
            except Exception as exc:  # noqa: BLE001 - mapped
                raise self._error(exc, f"canceling job {name}") from None
        return self.get(run_id, with_steps=False)

    def describe(
        self,
        request: TrainingRequest,
        *,
        run_id: str,
        trigger: str,
        idempotency_key: str | None = None,
        dataset_config: str | None = None,
    ) -> dict:
        """The job(s) `submit` would create, as Azure ML job YAML (`az ml job create -f`
        and `azure.ai.ml.load_job` read it). Sends nothing."""
        import yaml

        _check_run_id(run_id)
        if isinstance(request, VerificationRequest):
            return describe_verification(self, request, run_id=run_id, trigger=trigger)
        refuse_what_aml_cannot_run(request)
        require_settings(self.settings, self.submission_settings())
        if self.batch_mode:
            inputs = self._inputs(request, run_id, trigger, idempotency_key, None, None)
            return {
                "backend": "aml",
                "mode": "batch_endpoint",
                "run_id": run_id,
                "endpoint": self.settings.aml_batch_endpoint,
                "deployment": self.settings.aml_batch_deployment,
                "inputs": inputs,
            }
        name, version, arm = parse_component(self.settings.aml_pipeline_component or "")
        component_id = arm or (
            self._component_arm_id(name, version) if version else f"azureml:{name}@latest"
        )
        jobs = []
        for job_name, compute in self.plans(request, run_id):
            job = self.build_job(
                request,
                name=job_name,
                run_id=run_id,
                compute=compute,
                trigger=trigger,
                idempotency_key=idempotency_key,
                component_id=component_id,
                code_version=version,
                dataset_config=dataset_config,
            )
            text = yaml.safe_dump(job._to_dict(), sort_keys=False)
            jobs.append({"name": job_name, "compute": compute, "job_yaml": text})
        from pipeline.aml_job_graph import PROBE, TRAINING, WHOLE, can_skip, planned_nodes

        candidate_count = len(request.candidates) or 1
        deploy_target = request.deploy_target or self.settings.deployment_defaults()[0]
        policy = self._inputs(request, run_id, trigger, None, version, None)["retrain_policy"]
        probe = can_skip(policy)
        nodes = planned_nodes(
            candidate_count=candidate_count,
            deploy_target=deploy_target,
            phase=PROBE if probe else WHOLE,
        )
        after = {}
        if probe:
            # retrain_policy on_drift / min_new_rows: a drift probe first, then (on
            # `retrain` only) the training job (pipeline/drift_probe.py).
            after["nodes_after_retrain_decision"] = planned_nodes(
                candidate_count=candidate_count, deploy_target=deploy_target, phase=TRAINING
            )
        return {
            "backend": "aml",
            "mode": "pipeline_job",
            "run_id": run_id,
            "experiment": request.experiment,
            # Submitting builds the job from the published step components and starts
            # only these nodes; the YAML below names the pipeline component they form.
            "nodes": nodes,
            **after,
            "job_yaml": jobs[0]["job_yaml"],
            # A fan-out is several jobs: each one's YAML, the first one's above too.
            **({"jobs": jobs} if len(jobs) > 1 else {}),
        }

    # -- building jobs -------------------------------------------------------------
    def build_job(
        self,
        request: TrainingRequest,
        *,
        name: str,
        run_id: str,
        compute: str,
        trigger: str,
        idempotency_key: str | None,
        component_id: str,
        code_version: str | None,
        dataset_config: str | None = None,
    ) -> Any:
        """The PipelineJob for one compute target (no request sent)."""
        values = self._inputs(
            request, run_id, trigger, idempotency_key, code_version, dataset_config
        )
        values.update(step_computes(request, self.settings, compute, fanned_out=name != run_id))
        return pipeline_job(
            name=name,
            group=run_id,
            component_id=component_id,
            values=values,
            data={"training_data": "uri_folder", "dataset_config": "uri_file"},
            compute=compute,
            experiment=request.experiment,
            tags=self._tags(request, trigger, idempotency_key, code_version),
        )

    def data_uri(self, prefix: str) -> str:
        """Where jobs read the data: the datastore fronting the incoming container."""
        return f"azureml://datastores/{self.settings.aml_datastore}/paths/{prefix}"

    def _inputs(
        self,
        request: TrainingRequest,
        run_id: str,
        trigger: str,
        idempotency_key: str | None,
        code_version: str | None,
        dataset_config: str | None,
    ) -> dict[str, Any]:
        inputs = request.pipeline_inputs(
            data_uri=self.data_uri(request.data),
            lineage={
                "trigger": trigger,
                "run_key": idempotency_key or run_id,
                "code_version": code_version or _local_code_version(),
            },
            retrain_defaults=self.settings.retrain_defaults,
            **self.settings.deployment_inputs(),
        )
        inputs["data_location"] = f"{self.settings.incoming_container}/{request.data}"
        if dataset_config:
            inputs["dataset_config"] = (
                dataset_config
                if dataset_config.startswith("azureml:")
                else self.data_uri(dataset_config.lstrip("/"))
            )
        return inputs

    def _tags(
        self,
        request: TrainingRequest,
        trigger: str,
        idempotency_key: str | None,
        code_version: str | None,
    ) -> dict[str, str]:
        tags = dict(request.tags)
        tags[TAG_TRIGGER] = trigger
        if idempotency_key:
            tags[TAG_KEY] = idempotency_key[:256]
        if request.reason:
            tags[TAG_REASON] = request.reason[:256]
        if "originator" in request.tags:
            tags[TAG_ORIGINATOR] = request.tags["originator"]
        if code_version:
            tags[TAG_CODE_VERSION] = code_version
        return tags

    def plans(self, request: TrainingRequest, run_id: str) -> list[tuple[str, str]]:
        computes = list(request.compute) or (
            [self.settings.aml_compute] if self.settings.aml_compute else []
        )
        if not computes:
            raise SubmissionError(
                "invalid_request",
                "no compute target: give `compute` in the request or set AML_COMPUTE",
            )
        if len(computes) == 1:
            return [(run_id, computes[0])]
        return [(f"{run_id}-{compute}", compute) for compute in computes]

    def component_arm_id(self, name: str, version: str) -> str:
        """The ARM id of component `name` version `version` in this workspace."""
        return self._component_arm_id(name, version)

    def _component_arm_id(self, name: str, version: str) -> str:
        s = self.settings
        return (
            f"/subscriptions/{s.aml_subscription_id}/resourceGroups/{s.aml_resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{s.aml_workspace}"
            f"/components/{name}/versions/{version}"
        )

    def resolve_component(self, client: Any) -> tuple[str, str]:
        """The ARM id and version of the pipeline component; a bare name means its
        latest version, looked up (one GET) on every submission so a new publish is
        picked up without restarting the app."""
        name, version, arm = parse_component(self.settings.aml_pipeline_component or "")
        if arm:
            return arm, version or ""
        if version:
            return self._component_arm_id(name, version), version
        return self.latest_component(client, name)

    def latest_component(self, client: Any, name: str) -> tuple[str, str]:
        """The ARM id and version of the latest version of pipeline component `name`."""
        try:
            component = client.components.get(name, label="latest")
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._error(exc, f"looking up pipeline component {name}") from None
        parsed = _ARM_COMPONENT.match(component.id or "")
        if parsed is None:
            raise SubmissionError(
                "not_found", f"pipeline component {name}: Azure ML returned no version of it"
            )
        return parsed.group(1), parsed.group("version")

    def _working_nodes_only(
        self, client: Any, job: Any, request: TrainingRequest, component_id: str
    ) -> Any:
        """The job rebuilt from the published step components without the nodes this
        request does not use (pipeline/aml_job_graph.py)."""
        from pipeline.aml_job_graph import PROBE, WHOLE, can_skip, per_request_job
        from pipeline.drift_probe import PROP_DRIFT_PROBE, PROP_PIPELINE

        probe = can_skip(str(_input_value(job.inputs["retrain_policy"])))
        if probe:
            job.properties = {
                **(job.properties or {}),
                PROP_DRIFT_PROBE: "true",
                PROP_PIPELINE: component_id,
            }
        try:
            return per_request_job(
                client,
                job,
                component_id=component_id,
                candidate_count=len(request.candidates) or 1,
                deploy_target=request.deploy_target or self.settings.deployment_defaults()[0],
                published=self._published(),
                phase=PROBE if probe else WHOLE,
            )
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._error(exc, f"reading pipeline component {component_id}") from None

    # -- talking to Azure ML ---------------------------------------------------------
    def _create(self, client: Any, job: Any, experiment: str) -> RunRecord:
        try:
            created = client.jobs.create_or_update(job, experiment_name=experiment)
        except Exception as exc:  # noqa: BLE001 - mapped
            if not already_exists(exc):
                raise self._error(exc, f"submitting job {job.name}") from None
            # Already submitted (a retry, or a redelivered event): the job that exists
            # is the run; nothing new starts.
            try:
                existing = self._record(client.jobs.get(job.name))
            except Exception as exc:  # noqa: BLE001 - mapped
                raise self._error(exc, f"reading existing job {job.name}") from None
            return existing.model_copy(
                update={"extra": {**existing.extra, "already_submitted": True}}
            )
        return self._record(created)

    def _invoke_batch(
        self,
        client: Any,
        request: TrainingRequest,
        run_id: str,
        trigger: str,
        idempotency_key: str | None,
    ) -> RunRecord:
        from azure.ai.ml import Input

        given = [
            name
            for name, value in (
                ("compute", request.compute),
                ("prep_compute", request.prep_compute),
                ("train_compute", request.train_compute),
            )
            if value
        ]
        if given:
            raise SubmissionError(
                "invalid_request",
                f"{', '.join(given)}: a batch endpoint deployment runs on its own compute; "
                "leave them empty, or unset AML_BATCH_ENDPOINT to submit pipeline jobs",
            )
        values = self._inputs(request, run_id, trigger, idempotency_key, None, None)
        inputs = {}
        for key, value in values.items():
            if key == "training_data":
                inputs[key] = Input(type="uri_folder", path=value)
            else:
                inputs[key] = Input(type=_literal_type(value), default=value)
        endpoint = self.settings.aml_batch_endpoint
        try:
            job = client.batch_endpoints.invoke(
                endpoint_name=endpoint,
                deployment_name=self.settings.aml_batch_deployment,
                inputs=inputs,
                job_name=run_id,
                experiment_name=request.experiment,
            )
        except Exception as exc:  # noqa: BLE001 - mapped
            if already_exists(exc):
                return self.get(run_id)
            raise self._error(exc, f"invoking batch endpoint {endpoint}") from None
        record = self._record(job)
        extra = {**record.extra, "batch_endpoint": endpoint}
        return record.model_copy(
            update={
                "run_id": run_id,
                "trigger": trigger,
                "idempotency_key": idempotency_key,
                "extra": extra,
                "request": request.model_dump(mode="json"),
            }
        )

    def _group_jobs(self, client: Any, group: str) -> list[Any]:
        try:
            return [
                j
                for j in client.jobs.list(properties=f"{PROP_GROUP}={group}", job_type="Pipeline")
                if j is not None
            ]
        except Exception as exc:  # noqa: BLE001 - mapped
            raise self._error(exc, f"listing the jobs of group {group}") from None

    def group_jobs(self, group: str) -> list[RunRecord]:
        """Every job of a comparison group, one record each (for `aml-trigger compare`)."""
        return [self._record(j) for j in self._group_jobs(self.client(), group)]

    def _record(self, job: Any) -> RunRecord:
        return job_record(job)

    def _listed(self, client: Any, job: Any) -> RunRecord:
        if not is_drift_probe(job):
            return self._with_steps(client, self._record(job))
        from pipeline.aml_steps import ChildRuns

        children = ChildRuns(client)  # read once for the probe's decision and its steps
        return self._with_steps(client, self._followed(client, job, children), children)

    def _with_steps(self, client: Any, record: RunRecord, children: Any = None) -> RunRecord:
        """The record with its steps from the job's child jobs (pipeline jobs only; a
        job not started yet has none). Steps are detail: failing to read them leaves
        the run's own state as it is and says why in `extra`."""
        # A drift probe's run: the probe's steps, then its training job's (if any).
        jobs = list(record.extra.get("phase_jobs") or [])
        if record.status == "queued" and jobs:
            jobs = jobs[:-1]  # the last job has not started: it has no steps yet
        if not jobs and (record.status == "queued" or record.extra.get("batch_endpoint")):
            return record
        from pipeline.aml_steps import ChildRuns, child_steps

        read = children or ChildRuns(client)
        try:
            # The latest attempt's nodes (a preemption retry is a job of its own).
            names = jobs or [record.extra.get("job_name") or record.run_id]
            steps = [step for name in names for step in child_steps(client, name, read(name))]
        except Exception as exc:  # noqa: BLE001 - reported in extra
            problem = self._error(exc, f"reading the steps of {record.run_id}")
            message = getattr(problem, "message", None) or f"{type(exc).__name__}: {exc}"
            return record.model_copy(update={"extra": {**record.extra, "steps_error": message}})
        return record.model_copy(update={"steps": steps})

    def _error(self, exc: BaseException, action: str) -> Exception:
        return to_submission_error(exc, action=action, workspace=self.workspace)


def _follows_up(job: Any) -> bool:
    """A job that continues another one's run: a preemption retry, a training job."""
    return is_retry(job) or is_training(job)


def _input_value(item: Any) -> Any:
    return getattr(item, "_data", item)


def _check_run_id(run_id: str) -> None:
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise SubmissionError(
            "invalid_run_id",
            f"run id {run_id!r} must be 3-64 lowercase letters, digits, '_' or '-'",
        )


def refuse_what_aml_cannot_run(request: TrainingRequest) -> None:
    if refusals := request.backend_refusals("aml"):
        raise SubmissionError(
            "invalid_request", "; ".join(f"{r['path']}: {r['message']}" for r in refusals)
        )


def already_exists(exc: BaseException) -> bool:
    """A PUT of a job name that exists: 409, or the 400 UserError "A job with this name
    already exists" the service answers when the new body changes inputs or settings
    (MicrosoftDocs/azure-docs#122250). A PUT with an identical body is accepted as an
    update of tags and returns the existing job, which is equally safe."""
    status = getattr(exc, "status_code", None)
    if status == 409:
        return True
    return status == 400 and "already exists" in str(getattr(exc, "message", exc)).lower()


def _is_not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404


def _literal_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _local_code_version() -> str:
    from pipeline.version import code_version

    return code_version()
