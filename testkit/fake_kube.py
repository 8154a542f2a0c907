"""A stand-in for the Kubernetes API's Secret endpoints, enforcing the access Job's RBAC.

It answers `GET` and `PATCH` (JSON merge patch) of `/api/v1/namespaces/NS/secrets/NAME`
over plain HTTP, only with the expected bearer token, and only for the Secrets the Role of
deploy/k8s/access-rbac.yaml names (403 otherwise, as the API server would). Used by
tests/unit/test_access_secret.py and tests/e2e/test_security.py to run the real
`onboarding-access --listener-secret` outside a cluster.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class FakeKube:
    namespace: str
    token: str
    allowed: set[str]  # Secret names the service account may get and patch
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> base64 data
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (method, name, status)
    url: str = ""

    def decoded(self, name: str) -> dict[str, str]:
        return {key: base64.b64decode(value).decode() for key, value in self.secrets[name].items()}

    def env(self, token_file: Path) -> dict[str, str]:
        """What `onboarding-access` needs to reach this API instead of the in-cluster one."""
        token_file.write_text(self.token)
        return {
            "ACCESS_K8S_API_URL": self.url,
            "ACCESS_K8S_TOKEN_FILE": str(token_file),
            "ACCESS_K8S_NAMESPACE": self.namespace,
        }

    def handle(self, method: str, path: str, authorization: str, body: bytes) -> tuple[int, dict]:
        prefix = f"/api/v1/namespaces/{self.namespace}/secrets/"
        name = path[len(prefix) :] if path.startswith(prefix) else ""
        if authorization != f"Bearer {self.token}":
            status, answer = 401, {"kind": "Status", "reason": "Unauthorized"}
        elif not name or name not in self.allowed:
            status, answer = 403, {"kind": "Status", "reason": "Forbidden"}
        elif name not in self.secrets:
            status, answer = 404, {"kind": "Status", "reason": "NotFound"}
        elif method == "GET":
            status, answer = 200, {"kind": "Secret", "metadata": {"name": name}, "data": dict(self.secrets[name])}
        else:
            patch = json.loads(body)
            self.secrets[name].update(patch.get("data") or {})
            status, answer = 200, {"kind": "Secret", "metadata": {"name": name}, "data": dict(self.secrets[name])}
        self.calls.append((method, name or path, status))
        return status, answer


@contextmanager
def fake_kube(namespace: str, token: str, allowed: set[str], secrets: dict[str, dict[str, str]]) -> Iterator[FakeKube]:
    kube = FakeKube(namespace, token, allowed, {name: dict(data) for name, data in secrets.items()})

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.command == "PATCH" and self.headers.get("Content-Type") != "application/merge-patch+json":
                status, answer = 415, {"kind": "Status", "reason": "UnsupportedMediaType"}
            else:
                status, answer = kube.handle(self.command, self.path, self.headers.get("Authorization", ""), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = _serve  # noqa: N815 - the names BaseHTTPRequestHandler dispatches to

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    kube.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield kube
    finally:
        server.shutdown()
        server.server_close()
