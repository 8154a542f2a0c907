"""The shared core: event contracts (signup and decision), stream and key names, settings,
errors and the Airflow REST client. It imports nothing else of the project."""

from onboarding.airflow import AirflowClient, AirflowSettings, DagRun, TriggerOutcome
from onboarding.decision import DecisionEvent, publish_decision, read_decisions, wait_for_decision
from onboarding.errors import (
    AirflowError,
    AirflowRejected,
    AirflowUnavailable,
    ConfigError,
    InvalidEvent,
    OnboardingError,
)
from onboarding.keys import run_id_for
from onboarding.publisher import publish_raw, publish_signup, signup_event
from onboarding.schema import SignupEvent, parse_signup, signup_schema, validate_signup
from onboarding.settings import StreamSettings

__all__ = [
    "AirflowClient",
    "AirflowError",
    "AirflowRejected",
    "AirflowSettings",
    "AirflowUnavailable",
    "ConfigError",
    "DagRun",
    "DecisionEvent",
    "InvalidEvent",
    "OnboardingError",
    "SignupEvent",
    "StreamSettings",
    "TriggerOutcome",
    "parse_signup",
    "publish_decision",
    "publish_raw",
    "publish_signup",
    "read_decisions",
    "run_id_for",
    "signup_event",
    "signup_schema",
    "validate_signup",
    "wait_for_decision",
]
