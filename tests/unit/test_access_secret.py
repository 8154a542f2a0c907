"""`onboarding-access --listener-secret`: the listener's password lives in one Kubernetes
Secret, written before Airflow hears of it, kept across upgrades, refused clearly without
the RBAC of deploy/k8s/access-rbac.yaml. The Airflow side (`apply`) is recorded here; the
e2e in tests/e2e/test_security.py runs it against the real realtime Airflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ops import access
from testkit.fake_kube import FakeKube, fake_kube

SECRET = "onboarding-airflow-listener"
SLA_SECRET = "onboarding-airflow-sla"


def rbac_secret_names() -> set[str]:
    """The Secrets the Job's Role in deploy/k8s/access-rbac.yaml may get and patch."""
    docs = yaml.safe_load_all((Path(__file__).parents[2] / "deploy" / "k8s" / "access-rbac.yaml").read_text())
    (rule,) = next(doc for doc in docs if doc and doc["kind"] == "Role")["rules"]
    assert set(rule["verbs"]) == {"get", "patch"}
    return set(rule["resourceNames"])


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    allowed = rbac_secret_names()
    assert allowed == {SECRET, SLA_SECRET}
    with fake_kube("onboarding", "sa-token", allowed, {SECRET: {}, SLA_SECRET: {}, "other": {}}) as kube:
        for key, value in kube.env(tmp_path / "token").items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ACCESS_ADMIN_PASSWORD", "admin-pw")
        monkeypatch.delenv("ACCESS_LISTENER_PASSWORD", raising=False)
        monkeypatch.delenv("ACCESS_SLA_PASSWORD", raising=False)
        yield kube


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        access, "apply", lambda admin, listener, user="listener", *_sla: calls.append((admin, listener, user))
    )
    return calls


def test_first_run_generates_a_password_and_writes_it_before_airflow_gets_it(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    order: list[str] = []
    real_handle = kube.handle
    monkeypatch.setattr(kube, "handle", lambda *a: (order.append(a[0]), real_handle(*a))[1])
    monkeypatch.setattr(access, "apply", lambda *a, **k: order.append("airflow"))
    assert access.main(["--listener-secret", SECRET]) == 0
    stored = kube.decoded(SECRET)
    assert stored["username"] == "listener" and len(stored["password"]) >= 32
    assert order == ["GET", "PATCH", "airflow"]
    assert "generated, written to Secret" in capsys.readouterr().out


def test_an_upgrade_keeps_the_password_and_does_not_write(kube: FakeKube, applied) -> None:
    assert access.main(["--listener-secret", SECRET]) == 0
    first = kube.decoded(SECRET)["password"]
    assert access.main(["--listener-secret", SECRET]) == 0
    assert kube.decoded(SECRET)["password"] == first
    assert [call[1] for call in applied] == [first, first]
    assert [method for method, _name, _status in kube.calls] == ["GET", "PATCH", "GET"]


def test_a_given_password_rotates_the_secret(kube: FakeKube, applied, monkeypatch: pytest.MonkeyPatch) -> None:
    assert access.main(["--listener-secret", SECRET]) == 0
    monkeypatch.setenv("ACCESS_LISTENER_PASSWORD", "rotated-password")
    assert access.main(["--listener-secret", SECRET]) == 0
    assert kube.decoded(SECRET)["password"] == "rotated-password"
    assert applied[-1] == ("admin-pw", "rotated-password", "listener")


def test_a_job_that_failed_after_writing_converges_on_the_same_password(kube: FakeKube, monkeypatch) -> None:
    seen: list[str] = []

    def flaky(admin: str, listener: str, user: str = "listener", *_sla: object) -> None:
        seen.append(listener)
        if len(seen) == 1:
            from ops.errors import OpsError

            raise OpsError("database not reachable")

    monkeypatch.setattr(access, "apply", flaky)
    assert access.main(["--listener-secret", SECRET]) == 2  # the Job's pod fails; Kubernetes retries it
    assert access.main(["--listener-secret", SECRET]) == 0
    assert seen[0] == seen[1] == kube.decoded(SECRET)["password"]


@pytest.mark.parametrize(
    ("name", "token", "expected"),
    [
        ("missing-secret", "sa-token", "refused (403)"),  # not in the Role's resourceNames
        ("other", "sa-token", "refused (403)"),
        (SECRET, "stolen-token", "refused (401)"),
    ],
)
def test_without_rights_it_fails_clearly_and_touches_nothing(
    kube: FakeKube, applied, tmp_path: Path, monkeypatch, capsys, name: str, token: str, expected: str
) -> None:
    (tmp_path / "token").write_text(token)
    assert access.main(["--listener-secret", name]) == 2
    err = capsys.readouterr().err
    assert expected in err and "deploy/k8s/access-rbac.yaml" in err
    assert applied == [] and kube.decoded(SECRET) == {}


def test_a_secret_that_does_not_exist_is_named(kube: FakeKube, applied, capsys) -> None:
    kube.allowed.add("absent")
    assert access.main(["--listener-secret", "absent"]) == 2
    assert "onboarding/absent does not exist" in capsys.readouterr().err
    assert applied == []


def test_outside_a_cluster_it_says_what_to_set(monkeypatch: pytest.MonkeyPatch, applied, capsys) -> None:
    for key in ("ACCESS_K8S_API_URL", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ACCESS_ADMIN_PASSWORD", "admin-pw")
    assert access.main(["--listener-secret", SECRET]) == 2
    assert "KUBERNETES_SERVICE_HOST is unset" in capsys.readouterr().err
    assert applied == []


def test_without_the_flag_both_passwords_are_required(monkeypatch: pytest.MonkeyPatch, applied, capsys) -> None:
    monkeypatch.setenv("ACCESS_ADMIN_PASSWORD", "admin-pw")
    monkeypatch.delenv("ACCESS_LISTENER_PASSWORD", raising=False)
    monkeypatch.delenv("ACCESS_LISTENER_PASSWORD_FILE", raising=False)
    assert access.main([]) == 2
    assert "ACCESS_LISTENER_PASSWORD" in capsys.readouterr().err


def test_the_sla_user_gets_its_own_secret_and_a_read_only_role(kube: FakeKube, monkeypatch) -> None:
    """`--sla-secret`: the SLA service's own password, kept like the listener's; its role may
    read the onboarding DAG's runs and nothing else (no trigger, no clear, no edit)."""
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(access, "apply", lambda *args: calls.append(args))
    assert access.main(["--listener-secret", SECRET, "--sla-secret", SLA_SECRET]) == 0
    listener, sla = kube.decoded(SECRET), kube.decoded(SLA_SECRET)
    assert sla["username"] == "sla" and len(sla["password"]) >= 32 and sla["password"] != listener["password"]
    assert calls == [("admin-pw", listener["password"], "listener", sla["password"], "sla")]
    assert access.main(["--listener-secret", SECRET, "--sla-secret", SLA_SECRET]) == 0
    assert kube.decoded(SLA_SECRET) == sla  # kept on an upgrade
    assert set(access.SLA_PERMISSIONS) == {("can_read", "DAG:onboarding"), ("can_read", "DAG Run:onboarding")}
    assert not {action for action, _resource in access.SLA_PERMISSIONS} - {"can_read"}
