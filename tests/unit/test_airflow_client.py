"""The REST client: JWT handling and how each Airflow answer is classified."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from onboarding.airflow import AirflowClient, AirflowSettings, TriggerOutcome
from onboarding.errors import AirflowRejected, AirflowUnavailable

SETTINGS = AirflowSettings(url="http://airflow.test", username="listener", password="pw", timeout_s=1)


def jwt(exp: float) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS512'})}.{part({'exp': exp})}.sig"


class FakeServer:
    def __init__(self, trigger_status: int = 200, detail: str = "", token_ttl_s: float = 3600) -> None:
        self.trigger_status = trigger_status
        self.detail = detail
        self.token_ttl_s = token_ttl_s
        self.tokens_issued = 0
        self.reject_token: str | None = None
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/auth/token":
            assert json.loads(request.content) == {"username": "listener", "password": "pw"}
            self.tokens_issued += 1
            return httpx.Response(201, json={"access_token": jwt(time.time() + self.token_ttl_s)})
        if request.headers["Authorization"] == f"Bearer {self.reject_token}":
            return httpx.Response(401, json={"detail": "token expired"})
        body = json.loads(request.content)
        assert body["dag_run_id"] == "signup__e1" and body["logical_date"] is None
        return httpx.Response(self.trigger_status, json={"detail": self.detail or "x"})


def client_for(server: FakeServer) -> AirflowClient:
    return AirflowClient(SETTINGS, transport=httpx.MockTransport(server))


def test_trigger_creates_run_with_one_token() -> None:
    server = FakeServer()
    client = client_for(server)
    assert client.trigger("signup__e1", {"a": 1}) is TriggerOutcome.CREATED
    assert client.trigger("signup__e1", {"a": 1}) is TriggerOutcome.CREATED
    assert server.tokens_issued == 1


def test_token_is_refreshed_before_it_expires() -> None:
    server = FakeServer(token_ttl_s=30)  # inside the 60 s refresh margin
    client = client_for(server)
    client.trigger("signup__e1", {})
    client.trigger("signup__e1", {})
    assert server.tokens_issued == 2


def test_a_401_gets_a_new_token_and_one_retry() -> None:
    server = FakeServer()
    client = client_for(server)
    client.trigger("signup__e1", {})
    server.reject_token = server.requests[-1].headers["Authorization"].removeprefix("Bearer ")
    assert client.trigger("signup__e1", {}) is TriggerOutcome.CREATED
    assert server.tokens_issued == 2


def test_conflict_means_the_run_already_exists() -> None:
    assert client_for(FakeServer(409)).trigger("signup__e1", {}) is TriggerOutcome.ALREADY_EXISTS


def test_param_validation_error_is_a_rejection() -> None:
    with pytest.raises(AirflowRejected) as info:
        client_for(FakeServer(400, "Invalid input for param user_id")).trigger("signup__e1", {})
    assert "param user_id" in info.value.detail


@pytest.mark.parametrize(
    ("status", "detail", "kind"),
    [
        (500, "boom", "server_error"),
        (503, "down", "server_error"),
        (403, "forbidden", "auth"),
        (404, "no dag", "dag_not_found"),
        (400, "Dag with dag_id: 'onboarding' has import errors and cannot be triggered", "http_400"),
    ],
)
def test_server_side_problems_are_retryable(status: int, detail: str, kind: str) -> None:
    with pytest.raises(AirflowUnavailable) as info:
        client_for(FakeServer(status, detail)).trigger("signup__e1", {})
    assert info.value.kind == kind


def test_refused_connection_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = AirflowClient(SETTINGS, transport=httpx.MockTransport(refuse))
    with pytest.raises(AirflowUnavailable) as info:
        client.trigger("signup__e1", {})
    assert info.value.kind == "connection"


def test_bad_credentials_are_reported_as_auth() -> None:
    def deny(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Invalid credentials"})

    with pytest.raises(AirflowUnavailable, match="AIRFLOW_USERNAME"):
        AirflowClient(SETTINGS, transport=httpx.MockTransport(deny)).trigger("signup__e1", {})


class RunsServer:
    """A fake API holding some runs of the onboarding DAG: GET and DELETE on each."""

    def __init__(self, runs: set[str], delete_status: int = 204) -> None:
        self.runs = set(runs)
        self.delete_status = delete_status
        self.deleted: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": jwt(time.time() + 3600)})
        run_id = request.url.path.rsplit("/", 1)[1]
        if run_id not in self.runs:
            return httpx.Response(
                404, json={"detail": f"DAGRun with DAG ID: 'onboarding' and DagRun ID: '{run_id}' not found"}
            )
        if request.method == "GET":
            return httpx.Response(200, json={"dag_run_id": run_id, "state": "success", "conf": {}})
        if self.delete_status == 204:
            self.runs.discard(run_id)
            self.deleted.append(run_id)
        return httpx.Response(self.delete_status, json={"detail": "forbidden"} if self.delete_status >= 400 else None)


def test_erase_deletes_only_the_runs_that_exist_and_a_dry_run_deletes_none() -> None:
    from ops.erase import erase_airflow_runs

    server = RunsServer({"signup__a", "signup__b"})
    client = AirflowClient(SETTINGS, transport=httpx.MockTransport(server))
    wanted = ["signup__a", "signup__b", "signup__gone"]
    assert erase_airflow_runs(client, wanted, dry_run=True) == ["signup__a", "signup__b"]
    assert server.deleted == []
    assert erase_airflow_runs(client, wanted) == ["signup__a", "signup__b"]
    assert server.deleted == ["signup__a", "signup__b"]
    assert client.get_run("signup__a") is None
    assert client.delete_run("signup__a") is False


def test_a_delete_without_the_permission_is_an_auth_error_not_a_silent_success() -> None:
    client = AirflowClient(SETTINGS, transport=httpx.MockTransport(RunsServer({"signup__a"}, delete_status=403)))
    with pytest.raises(AirflowUnavailable) as refused:
        client.delete_run("signup__a")
    assert refused.value.kind == "auth"


def test_a_password_from_a_file_is_read_again_at_each_login(tmp_path) -> None:
    """A rotated Kubernetes Secret (the mounted file changes) takes effect at the next login,
    without restarting the listener."""
    secret = tmp_path / "password"
    secret.write_text("old\n")
    settings = AirflowSettings.from_env(
        {"AIRFLOW_API_URL": "http://airflow.test", "AIRFLOW_PASSWORD_FILE": str(secret)}
    )
    accepted = {"old"}
    logins: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            password = json.loads(request.content)["password"]
            logins.append(password)
            if password not in accepted:
                return httpx.Response(401, json={"detail": "invalid credentials"})
            return httpx.Response(201, json={"access_token": jwt(time.time() + 3600) + password})
        if request.headers["Authorization"].endswith("old") and "old" not in accepted:
            return httpx.Response(401, json={"detail": "token of a rotated user"})
        return httpx.Response(201, json={})

    client = AirflowClient(settings, transport=httpx.MockTransport(server))
    assert client.trigger("signup__e1", {}) is TriggerOutcome.CREATED
    secret.write_text("new\n")  # the access Job rotated the password ...
    accepted = {"new"}  # ... and Airflow took it
    assert client.trigger("signup__e2", {}) is TriggerOutcome.CREATED
    assert logins == ["old", "new"]
