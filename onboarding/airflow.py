"""The one client of Airflow's stable REST API (`/api/v2`): the listener triggers and reads
runs with it, the SLA service re-drives them, `onboarding-erase` deletes them and the local
stack waits for an instance to be ready.

Authentication: a JWT from `POST /auth/token`, refreshed shortly before its `exp` claim and
once more on a 401. Every failure is classified: `AirflowUnavailable` (retry later) or
`AirflowRejected` (this input can never be accepted).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from onboarding import keys
from onboarding.env import Env
from onboarding.errors import AirflowRejected, AirflowUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AirflowSettings:
    """How to reach an Airflow instance's REST API, and as whom."""

    url: str = "http://127.0.0.1:28080"
    username: str = "listener"
    password: str = field(default="", repr=False)
    password_file: str = ""  # read again at each login, so a rotated Secret needs no restart
    dag_id: str = keys.ONBOARDING_DAG_ID
    timeout_s: float = 10.0
    token_refresh_margin_s: float = 60.0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], credentials: str = "AIRFLOW", username: str | None = None
    ) -> AirflowSettings:
        """AIRFLOW_API_URL, AIRFLOW_DAG_ID, AIRFLOW_TIMEOUT_S, AIRFLOW_TOKEN_REFRESH_MARGIN_S, and
        the user from `<credentials>_USERNAME` and `<credentials>_PASSWORD` (or `..._PASSWORD_FILE`):
        `AIRFLOW_*` is the listener's restricted user, `AIRFLOW_ADMIN_*` an operator's."""
        env = Env(environ)
        return cls(
            url=env.str("AIRFLOW_API_URL", cls.url).rstrip("/"),
            username=env.str(f"{credentials}_USERNAME", username or cls.username),
            password=env.secret(f"{credentials}_PASSWORD") or "",
            password_file=""
            if env.optional_str(f"{credentials}_PASSWORD")
            else env.str(f"{credentials}_PASSWORD_FILE", ""),
            dag_id=env.str("AIRFLOW_DAG_ID", cls.dag_id),
            timeout_s=env.float("AIRFLOW_TIMEOUT_S", cls.timeout_s, minimum=0.1),
            token_refresh_margin_s=env.float("AIRFLOW_TOKEN_REFRESH_MARGIN_S", cls.token_refresh_margin_s, minimum=0),
        )

    def current_password(self) -> str:
        """The password as of now: the file's content if the password came from a file that is
        still readable, else the one read at start."""
        if self.password_file:
            try:
                return Path(self.password_file).read_text(encoding="utf-8").strip() or self.password
            except OSError:
                return self.password
        return self.password


class TriggerOutcome(StrEnum):
    CREATED = "created"
    ALREADY_EXISTS = "already_exists"


@dataclass(frozen=True)
class DagRun:
    run_id: str
    state: str
    conf: dict[str, Any]


def _token_expiry(token: str) -> float:
    """The `exp` claim of a JWT (not verified: the server does that), or 0 if absent."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims.get("exp", 0))
    except (IndexError, ValueError, TypeError):
        return 0.0


class AirflowClient:
    """A thread-safe client; pass `transport` to test against a fake server."""

    def __init__(self, settings: AirflowSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._http = httpx.Client(base_url=settings.url, timeout=settings.timeout_s, transport=transport)
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
        """Create the run, or report that a run with this id already exists."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        response = self._request("POST", f"/api/v2/dags/{self.settings.dag_id}/dagRuns", json=body)
        if response.status_code in (200, 201):
            return TriggerOutcome.CREATED
        if response.status_code == 409:
            return TriggerOutcome.ALREADY_EXISTS
        raise self._classify(response)

    def get_run(self, run_id: str) -> DagRun | None:
        response = self._request("GET", f"/api/v2/dags/{self.settings.dag_id}/dagRuns/{run_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._classify(response)
        data = response.json()
        return DagRun(run_id=data["dag_run_id"], state=data["state"], conf=data.get("conf") or {})

    def clear_run(self, run_id: str) -> bool:
        """Clear every task of a run so it runs again (the SLA redrive). False: no such run."""
        path = f"/api/v2/dags/{self.settings.dag_id}/dagRuns/{run_id}/clear"
        response = self._request("POST", path, json={"dry_run": False})
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise self._classify(response)
        return True

    def delete_run(self, run_id: str) -> bool:
        """Delete a run with its task instances and XComs (needs an admin). False: no such run."""
        response = self._request("DELETE", f"/api/v2/dags/{self.settings.dag_id}/dagRuns/{run_id}")
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 204):
            raise self._classify(response)
        return True

    def check(self) -> None:
        """Raise AirflowUnavailable unless the API answers and the DAG is known."""
        self.get_dag(self.settings.dag_id)

    def get_dag(self, dag_id: str) -> dict[str, Any]:
        """A DAG's details (`is_paused`, ...); AirflowUnavailable while it is not registered."""
        response = self._request("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code != 200:
            raise self._classify(response, dag_id)
        return dict(response.json())

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to import (`filename`, `stack_trace`)."""
        response = self._request("GET", "/api/v2/importErrors")
        if response.status_code != 200:
            raise self._classify(response)
        return list(response.json().get("import_errors") or [])

    def health(self) -> dict[str, Any]:
        """`/api/v2/monitor/health` (no credential needed): the metadatabase's and scheduler's status."""
        try:
            response = self._http.get("/api/v2/monitor/health")
        except httpx.TimeoutException as err:
            raise AirflowUnavailable("timeout", f"GET /api/v2/monitor/health timed out: {err}") from err
        except httpx.TransportError as err:
            raise AirflowUnavailable("connection", f"GET /api/v2/monitor/health failed: {err}") from err
        if response.status_code != 200:
            raise self._classify(response)
        return dict(response.json())

    def token(self) -> str:
        """A valid access token (cached until shortly before it expires)."""
        return self._bearer()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; on a 401 (token revoked or expired early) once more with a new token."""
        response = self._send(method, path, **kwargs)
        if response.status_code == 401:
            self._invalidate_token()
            response = self._send(method, path, **kwargs)
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._bearer()}"}
        try:
            return self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException as err:
            raise AirflowUnavailable("timeout", f"{method} {path} timed out: {err}") from err
        except httpx.TransportError as err:
            raise AirflowUnavailable("connection", f"{method} {path} failed: {err}") from err

    def _bearer(self) -> str:
        with self._lock:
            if self._token is None or time.time() >= self._token_expires_at - self.settings.token_refresh_margin_s:
                self._token, self._token_expires_at = self._fetch_token()
            return self._token

    def _invalidate_token(self) -> None:
        with self._lock:
            self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        credentials = {"username": self.settings.username, "password": self.settings.current_password()}
        try:
            response = self._http.post("/auth/token", json=credentials)
        except httpx.TimeoutException as err:
            raise AirflowUnavailable("timeout", f"POST /auth/token timed out: {err}") from err
        except httpx.TransportError as err:
            raise AirflowUnavailable("connection", f"POST /auth/token failed: {err}") from err
        if response.status_code not in (200, 201):
            raise AirflowUnavailable(
                "auth",
                f"POST /auth/token answered {response.status_code}: check AIRFLOW_USERNAME and the password",
            )
        token = response.json()["access_token"]
        expires_at = _token_expiry(token) or time.time() + 300
        logger.info(
            "airflow: obtained a token for %s, valid for %.0f s",
            self.settings.username,
            expires_at - time.time(),
        )
        return token, expires_at

    def _classify(self, response: httpx.Response, dag_id: str | None = None) -> AirflowRejected | AirflowUnavailable:
        detail = _detail(response)
        code = response.status_code
        if code == 400 and not detail.startswith("Dag with dag_id"):
            return AirflowRejected("invalid_params", detail)
        if code == 422:
            return AirflowRejected("invalid_request", detail)
        if code >= 500:
            return AirflowUnavailable("server_error", f"{code}: {detail}")
        if code in (401, 403):
            return AirflowUnavailable("auth", f"{code}: {detail}")
        if code == 404:
            unknown = dag_id or self.settings.dag_id
            return AirflowUnavailable("dag_not_found", f"DAG {unknown!r} is not (yet) known: {detail}")
        return AirflowUnavailable(f"http_{code}", detail)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return text[:500]
