"""The latency floor: the listener deciding in its own process, with no Airflow.

    python -m benchmarks.inprocess

The real listener loop (same consumer group, validation, dead letters, de-duplication and
acknowledgement) with a trigger that, instead of asking Airflow for a run, runs the
decision steps (`risk.steps`: enrich -> score -> decide -> publish) right there, with the
model loaded once. What Airflow adds on top of this is the price of its per-step
visibility, retries and records; `benchmarks/latency.py` measures it side by side.
Settings: the listener's environment (REDIS_URL, SIGNUPS_STREAM, ...) and RISK_MODEL_DIR.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from listener.consumer import Listener  # noqa: E402
from listener.settings import ListenerSettings  # noqa: E402
from onboarding.airflow import DagRun, TriggerOutcome  # noqa: E402
from onboarding.decision import utc_now  # noqa: E402
from onboarding.redis_clients import Role, connect  # noqa: E402
from risk import steps  # noqa: E402
from risk.artifacts import model_store  # noqa: E402
from risk.publishing import Publisher  # noqa: E402
from risk.settings import RiskSettings  # noqa: E402


class InProcessDecider:
    """A `listener.consumer.Trigger` that decides at once instead of creating a run."""

    def __init__(self, settings: RiskSettings) -> None:
        self.settings = settings
        self.store = model_store(settings.model_dir)
        self.store.current()  # load it before the first signup
        self.publisher = Publisher.from_settings(settings)

    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
        enriched = steps.enrich(conf, conf.get("accepted_at"), utc_now())
        decided = steps.decide(steps.score(enriched, self.store.current()))
        event = steps.decision_event(conf, decided, run_id, None, conf.get("accepted_at"))
        self.publisher.publish(event)
        return TriggerOutcome.CREATED

    def get_run(self, run_id: str) -> DagRun | None:
        return None


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ListenerSettings.from_env()
    client = connect(settings.streams.redis_url, Role.LISTENER, block_s=settings.block_ms / 1000)
    listener = Listener(client, InProcessDecider(RiskSettings.from_env()), settings)
    signal.signal(signal.SIGTERM, lambda *_: listener.stop())
    signal.signal(signal.SIGINT, lambda *_: listener.stop())
    print("in-process decider ready", flush=True)
    listener.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
