"""Run state from Azure ML job state, cancel, and the error table at the wire."""

from __future__ import annotations

import pytest

from pipeline.aml_status import AML_STATUS, group_status, run_status
from pipeline.request import TrainingRequest
from pipeline.submitter import RunNotFound, SubmissionError

EVERY_STATE = {
    "NotStarted": "queued",
    "Queued": "queued",
    "Preparing": "queued",
    "Provisioning": "queued",
    "Starting": "queued",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "NotResponding": "running",
    "Paused": "running",
    "Unknown": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Canceled": "canceled",
}


@pytest.mark.parametrize(("aml", "expected"), sorted(EVERY_STATE.items()))
def test_every_azure_ml_state_maps_onto_a_run_state(aml, expected):
    assert run_status(aml) == expected


def test_the_sdk_enum_maps_like_its_value_and_new_states_are_not_final():
    from azure.ai.ml._restclient.arm_ml_service.models import JobStatus

    for member in JobStatus:
        assert run_status(member) == EVERY_STATE.get(member.value, "running")
    assert set(AML_STATUS) == set(EVERY_STATE)
    assert run_status("SomeFutureState") == "running"


def test_a_group_is_finished_only_when_every_job_is():
    assert group_status(["completed", "running"]) == "running"
    assert group_status(["queued", "queued"]) == "queued"
    assert group_status(["completed", "queued"]) == "running"
    assert group_status(["completed", "failed"]) == "failed"
    assert group_status(["canceled", "completed"]) == "canceled"
    assert group_status(["completed", "completed"]) == "completed"


@pytest.mark.parametrize("state", sorted(EVERY_STATE))
def test_get_reads_the_job_state_over_the_wire(submitter, fake_azure, wire, state):
    fake_azure.on(
        "GET",
        r"/jobs/run-s1\?",
        (200, wire.job("run-s1", state, properties={"aml_trigger.compute": "gpu"})),
    )
    record = submitter.get("run-s1")
    assert record.status == EVERY_STATE[state]
    assert record.extra["aml_status"] == state
    assert record.extra["compute"] == "gpu"
    assert record.terminal == (state in {"Completed", "Failed", "Canceled"})


def test_get_of_a_fan_out_group_aggregates_its_jobs(submitter, fake_azure, wire):
    fake_azure.on("GET", r"/jobs/run-g1\?", wire.error(404, "NotFound", "no such job"))
    members = [
        wire.job("run-g1-a", "Completed", properties={"aml_trigger.compute": "a"}),
        wire.job("run-g1-b", "Running", properties={"aml_trigger.compute": "b"}),
    ]
    fake_azure.on("GET", r"/jobs\?", (200, {"value": members}))

    record = submitter.get("run-g1")

    listing = fake_azure.requests("GET", "/jobs")[-1]
    assert "properties=aml_trigger.comparison_group%3Drun-g1" in listing.url
    assert record.run_id == "run-g1"
    assert record.status == "running"
    assert [(j["name"], j["status"]) for j in record.extra["jobs"]] == [
        ("run-g1-a", "completed"),
        ("run-g1-b", "running"),
    ]


def test_get_of_an_unknown_run_raises_run_not_found(submitter, fake_azure, wire):
    fake_azure.on("GET", r"/jobs/run-nope\?", wire.error(404, "NotFound", "no such job"))
    fake_azure.on("GET", r"/jobs\?", (200, {"value": []}))
    with pytest.raises(RunNotFound):
        submitter.get("run-nope")


def test_cancel_posts_cancel_and_returns_the_new_state(submitter, fake_azure, wire):
    fake_azure.on(
        "GET",
        r"/jobs/run-c1\?",
        (200, wire.job("run-c1", "Running")),
        (200, wire.job("run-c1", "CancelRequested")),
    )
    fake_azure.on(
        "POST", r"/jobs/run-c1/cancel\?", (202, None, {"Location": "https://x/operations/1"})
    )

    record = submitter.cancel("run-c1")

    assert [s.method for s in fake_azure.sent] == ["GET", "POST", "GET"]
    assert fake_azure.sent[1].path.endswith("/jobs/run-c1/cancel")
    assert record.extra["aml_status"] == "CancelRequested"
    assert record.status == "running"


def test_list_runs_asks_only_for_jobs_this_service_submitted(submitter, fake_azure, wire):
    fake_azure.on(
        "GET",
        r"/jobs\?",
        (200, {"value": [wire.job("run-l1", "Completed"), wire.job("run-l2", "Queued")]}),
    )
    records = submitter.list_runs(limit=5)
    url = fake_azure.sent[0].url
    assert "properties=aml_trigger.run_id" in url and "jobType=Pipeline" in url
    assert {r.run_id: r.status for r in records} == {"run-l1": "completed", "run-l2": "queued"}


# -- the error table ---------------------------------------------------------------


def _submit(submitter):
    return submitter.submit(TrainingRequest(), run_id="run-err", trigger="http")


def test_401_names_the_identity_problem_and_the_role(submitter, fake_azure, wire):
    fake_azure.on("PUT", r"/jobs/", wire.error(401, "AuthenticationFailed", "token expired"))
    with pytest.raises(SubmissionError) as caught:
        _submit(submitter)
    err = caught.value
    assert err.code == "unauthorized" and not err.retryable
    assert "HTTP 401" in err.message and "AzureML Data Scientist" in err.message
    assert "managed identity" in err.message and wire.WS in err.message
    assert "eyJ" not in err.message  # no token
    assert len(fake_azure.requests("PUT")) == 1


def test_403_asks_for_the_role_on_the_workspace(submitter, fake_azure, wire):
    fake_azure.on(
        "PUT", r"/jobs/", wire.error(403, "AuthorizationFailed", "does not have authorization")
    )
    with pytest.raises(SubmissionError) as caught:
        _submit(submitter)
    assert caught.value.code == "forbidden"
    assert "Grant it the role 'AzureML Data Scientist' on workspace 'ws-ml'" in (
        caught.value.message
    )


def test_404_names_the_missing_component(submitter, fake_azure, wire):
    fake_azure.on(
        "PUT", r"/jobs/", wire.error(404, "ResourceNotFound", "component version not found")
    )
    fake_azure.on(
        "GET",
        r"/components/aml_trigger_training/versions/3\?",
        wire.error(404, "NotFound", "not found"),
    )
    from pipeline.aml_client import to_submission_error

    with pytest.raises(SubmissionError) as caught:
        _submit(submitter)
    assert caught.value.code == "not_found"
    assert "does not exist in workspace 'ws-ml'" in caught.value.message

    # the resource named comes from the request URL
    from azure.core.exceptions import ResourceNotFoundError

    response = type("R", (), {"status_code": 404, "request": fake_azure.sent[-1]})()
    exc = ResourceNotFoundError("nope")
    exc.status_code = 404
    exc.response = response
    fake_azure.sent[-1].url = (
        "https://management.azure.com" + wire.WS_PATH + "/computes/gpu-x?api-version=1"
    )
    mapped = to_submission_error(exc, action="submitting", workspace="ws-ml")
    assert "compute target gpu-x does not exist" in mapped.message
    assert "AML_COMPUTE" in mapped.message


def test_429_with_retry_after_is_retried_then_succeeds(aml_env, fake_azure, fake_credential, wire):
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    submitter = AmlSubmitter(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=3,
        retry_backoff_factor=0,
    )
    fake_azure.on(
        "PUT",
        r"/jobs/",
        wire.error(429, "TooManyRequests", "slow down", {"Retry-After": "0"}),
        wire.echo_job(),
    )
    record = _submit(submitter)
    assert record.status == "queued"
    assert len(fake_azure.requests("PUT")) == 2


def test_503_exhausting_the_retries_is_a_retryable_error(
    aml_env, fake_azure, fake_credential, wire
):
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    submitter = AmlSubmitter(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=2,
        retry_backoff_factor=0,
    )
    fake_azure.on("PUT", r"/jobs/", wire.error(503, "ServiceUnavailable", "busy"))
    with pytest.raises(SubmissionError) as caught:
        _submit(submitter)
    assert caught.value.code == "unavailable"
    assert caught.value.retryable is True
    assert "HTTP 503 after retries" in caught.value.message
    assert len(fake_azure.requests("PUT")) == 3  # the first try and two retries


def test_409_outside_submission_is_a_conflict(submitter, fake_azure, wire):
    from azure.core.exceptions import ResourceExistsError

    from pipeline.aml_client import to_submission_error

    exc = ResourceExistsError("exists")
    exc.status_code = 409
    mapped = to_submission_error(exc, action="creating schedule nightly", workspace="ws-ml")
    assert mapped.code == "conflict" and "already exists" in mapped.message


def test_no_credential_at_all_says_how_to_get_one(aml_env, fake_azure):
    from azure.identity import CredentialUnavailableError

    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    class NoCredential:
        def get_token(self, *scopes, **kwargs):
            raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")

    submitter = AmlSubmitter(
        Settings.from_env(), credential=NoCredential(), transport=fake_azure, retry_total=0
    )
    with pytest.raises(SubmissionError) as caught:
        _submit(submitter)
    assert caught.value.code == "unauthorized"
    assert "az login" in caught.value.message and "AZURE_CLIENT_ID" in caught.value.message


def test_retries_stop_at_the_time_budget_with_a_retryable_error(
    aml_env, fake_azure, fake_credential, wire
):
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    submitter = AmlSubmitter(
        Settings.from_env(),
        credential=fake_credential,
        transport=fake_azure,
        retry_total=10,
        retry_backoff_factor=0,
        timeout=1e-9,  # spent by the first attempt
    )
    fake_azure.on(
        "PUT", r"/jobs/", wire.error(429, "TooManyRequests", "slow down", {"Retry-After": "0"})
    )
    with pytest.raises(SubmissionError) as caught:
        _submit(submitter)
    assert caught.value.retryable is True
    assert len(fake_azure.requests("PUT")) == 1


def test_status_needs_only_the_workspace_settings(
    aml_env, monkeypatch, fake_azure, fake_credential, wire
):
    from pipeline.aml_submitter import AmlSubmitter
    from pipeline.settings import Settings

    monkeypatch.delenv("AML_PIPELINE_COMPONENT")
    fake_azure.on("GET", r"/jobs/run-s2\?", (200, wire.job("run-s2", "Completed")))
    submitter = AmlSubmitter(
        Settings.from_env(), credential=fake_credential, transport=fake_azure, retry_total=0
    )

    assert submitter.get("run-s2").status == "completed"
    with pytest.raises(SubmissionError, match="AML_PIPELINE_COMPONENT"):
        _submit(submitter)
