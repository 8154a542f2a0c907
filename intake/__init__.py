"""The intake process (`onboarding-intake`): forwards each app's intake stream into the
signups stream and keeps the streams' retention, under its own Redis user `intake`.

It never parses a payload (the `forward_intake` Redis Function copies bytes with a size
check), so the listener, the one process that parses untrusted input, holds neither XADD
on the signups stream nor any XTRIM (docs/security.md, C15).
"""

from intake.forwarder import IntakeForwarder
from intake.metrics import IntakeMetrics
from intake.settings import IntakeSettings

__all__ = ["IntakeForwarder", "IntakeMetrics", "IntakeSettings"]
