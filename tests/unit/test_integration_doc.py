"""docs/integration.md says what the service does: every reason code it can emit is listed
with the text the decision carries, and the names it gives are the service's."""

from __future__ import annotations

import re
from pathlib import Path

from onboarding import keys
from risk.features import FEATURES
from risk.model import REASON_GROUP, generic_reason_text

DOC = Path(__file__).parents[2] / "docs" / "integration.md"


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
