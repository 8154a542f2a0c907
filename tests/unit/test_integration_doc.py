"""docs/integration.md says what the service does: every reason code it can emit is listed
with the text the decision carries, every reason a signup can be refused for is listed with
whether it is retryable, the names it gives are the service's, and its client snippets are
valid code that imports only what the clients export."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import onboarding_client
import pytest

from onboarding import keys, schema
from onboarding.refusal import _SUMMARY, NOT_ANSWERED, RETRYABLE
from risk.features import FEATURES
from risk.model import REASON_GROUP, generic_reason_text

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "integration.md"
NODE_TYPES = ROOT / "clients" / "node" / "onboarding.d.ts"


def documented_codes() -> dict[str, str]:
    """The rows of the table headed `| code | text |`."""
    table = DOC.read_text().split("| code | text |\n", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+?) \|$", table, re.MULTILINE))


def test_every_reason_code_the_service_can_emit_is_documented_with_its_text() -> None:
    emitted = {f.name for f in FEATURES} | set(REASON_GROUP.values())
    documented = documented_codes()
    assert emitted | {"pipeline_failed"} == set(documented)
    for code in emitted:
        assert documented[code] == generic_reason_text(code), code


def test_the_documented_names_are_the_services() -> None:
    text = DOC.read_text()
    example = keys.decision_key(keys.DECISIONS_STREAM, "<event_id>")
    assert f"`{example}`" in text
    assert f"XADD {keys.SIGNUPS_STREAM} * payload" in text


def refusal_rows() -> dict[str, str]:
    """reason -> retryable, from the table headed `| reason | retryable | ...`."""
    table = DOC.read_text().split("| reason | retryable |", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| (yes|no|-) \|", table, re.MULTILINE))


def test_every_refusal_reason_is_documented_with_whether_it_is_retryable() -> None:
    listener_reasons = set(_SUMMARY) | set(NOT_ANSWERED) | set(schema._REASONS.values()) | {"schema_violation"}
    rows = refusal_rows()
    assert set(rows) == listener_reasons
    for reason, retryable in rows.items():
        expected = "-" if reason in NOT_ANSWERED else "yes" if reason in RETRYABLE else "no"
        assert retryable == expected, reason


def snippets(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("code", snippets("python"))
def test_the_python_snippets_parse_and_import_what_the_client_exports(code: str) -> None:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module == "onboarding_client":
            assert {a.name for a in node.names} <= set(onboarding_client.__all__)
    for name in re.findall(r"\bclient\.(\w+)\(", code):
        assert callable(getattr(onboarding_client.OnboardingClient, name, None)), name


@pytest.mark.parametrize("code", snippets("js"))
def test_the_node_snippets_import_what_the_package_exports(code: str) -> None:
    exported = set(
        re.findall(r"^export (?:class|function|const|type|interface) (\w+)", NODE_TYPES.read_text(), re.MULTILINE)
    )
    for names in re.findall(r"import \{([^}]*)\} from [\"']onboarding-client[\"']", code):
        assert {n.strip() for n in names.split(",") if n.strip()} <= exported
    for name in re.findall(r"\bawait (\w+)\(", code):
        assert name in exported, name
