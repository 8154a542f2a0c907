"""Read and write one Kubernetes Secret from inside a pod, with the pod's service account.

The access set-up Job (`onboarding-access --listener-secret NAME`) keeps the listener's
Airflow password in a Secret that the listener pods mount. The Job's service account may
`get` and `patch` exactly that Secret (deploy/k8s/access-rbac.yaml), nothing else, so a
plain REST call is all this needs; no Kubernetes client library.

In a pod the API address, token, CA and namespace come from the standard places
(KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount/*);
ACCESS_K8S_API_URL, ACCESS_K8S_TOKEN_FILE, ACCESS_K8S_CA_FILE and ACCESS_K8S_NAMESPACE
override them (tests, out-of-cluster runs).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from onboarding.env import Env
from onboarding.errors import ConfigError
from ops.errors import OpsError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ClusterSettings:
    api_url: str
    namespace: str
    token_file: Path
    ca_file: Path | None  # None: the API URL is plain http (tests only)
    timeout_s: float = field(default=10.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ClusterSettings:
        env = Env(environ)
        api_url = env.str("ACCESS_K8S_API_URL", "")
        if not api_url:
            host, port = env.str("KUBERNETES_SERVICE_HOST", ""), env.str("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ConfigError(
                    "not inside a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset): set ACCESS_K8S_API_URL, "
                    "ACCESS_K8S_TOKEN_FILE and ACCESS_K8S_NAMESPACE, or leave out --listener-secret"
                )
            api_url = f"https://{host}:{port}"
        namespace = env.str("ACCESS_K8S_NAMESPACE", "")
        if not namespace:
            try:
                namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
            except OSError as err:
                raise ConfigError(f"ACCESS_K8S_NAMESPACE is unset and the namespace file is unreadable: {err}") from err
        ca = env.str("ACCESS_K8S_CA_FILE", str(SERVICE_ACCOUNT_DIR / "ca.crt"))
        return cls(
            api_url=api_url.rstrip("/"),
            namespace=namespace,
            token_file=Path(env.str("ACCESS_K8S_TOKEN_FILE", str(SERVICE_ACCOUNT_DIR / "token"))),
            ca_file=Path(ca) if api_url.startswith("https://") else None,
        )


class SecretStore:
    """`get` and `patch` of Secrets in one namespace."""

    def __init__(self, settings: ClusterSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        verify: bool | str = str(settings.ca_file) if settings.ca_file else True
        self._http = httpx.Client(
            base_url=settings.api_url, timeout=settings.timeout_s, verify=verify, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def get(self, name: str) -> dict[str, str] | None:
        """The Secret's data, decoded; None if it does not exist."""
        response = self._call("GET", name)
        if response.status_code == 404:
            return None
        data = response.json().get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def patch(self, name: str, data: Mapping[str, str]) -> None:
        """Set keys of an existing Secret (a JSON merge patch: other keys are kept)."""
        body = {"data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}
        response = self._call("PATCH", name, content=json.dumps(body), content_type="application/merge-patch+json")
        if response.status_code == 404:
            raise OpsError(
                f"Secret {self.settings.namespace}/{name} does not exist: create it first (deploy/k8s/access-rbac.yaml)"
            )

    def _call(self, method: str, name: str, content: str | None = None, content_type: str = "") -> httpx.Response:
        try:
            token = self.settings.token_file.read_text().strip()  # re-read: projected tokens rotate
        except OSError as err:
            raise ConfigError(f"the service account token {self.settings.token_file} is unreadable: {err}") from err
        path = f"/api/v1/namespaces/{quote(self.settings.namespace)}/secrets/{quote(name)}"
        headers = {"Authorization": f"Bearer {token}"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self._http.request(method, path, headers=headers, content=content)
        except httpx.HTTPError as err:
            raise OpsError(f"{method} Secret {self.settings.namespace}/{name}: {err}") from err
        if response.status_code in (401, 403):
            raise OpsError(
                f"{method} Secret {self.settings.namespace}/{name} was refused ({response.status_code}): "
                "the Job's service account needs get and patch on it (deploy/k8s/access-rbac.yaml)"
            )
        if response.status_code >= 400 and response.status_code != 404:
            raise OpsError(f"{method} Secret {self.settings.namespace}/{name} answered {response.status_code}")
        return response
