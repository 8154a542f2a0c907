"""The shared core: event contracts (signup and decision), settings and errors."""

from onboarding.decision import DecisionEvent, publish_decision, read_decisions, wait_for_decision
from onboarding.errors import ConfigError, InvalidEvent, OnboardingError
from onboarding.publisher import new_signup, publish_raw, publish_signup, sample_application
from onboarding.schema import SignupEvent, parse_signup, signup_schema, validate_signup
from onboarding.settings import StreamSettings

__all__ = [
    "ConfigError",
    "DecisionEvent",
    "InvalidEvent",
    "OnboardingError",
    "SignupEvent",
    "StreamSettings",
    "new_signup",
    "parse_signup",
    "publish_decision",
    "publish_raw",
    "publish_signup",
    "read_decisions",
    "sample_application",
    "signup_schema",
    "validate_signup",
    "wait_for_decision",
]
