"""What every console script shares in its `--help`: `--version` (the installed package's) and
the environment variables it reads (tests/test_console_scripts.py runs each script with both);
and what the long-running ones share: settings read or the reason on stderr, and the stop signals."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from onboarding.errors import OnboardingError

DISTRIBUTION = "onboarding-decisions"
T = TypeVar("T")


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source checkout that was not installed
        return "unknown"


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")


def environment_epilog(names: Iterable[str], note: str = "defaults and meaning: docs/configuration.md") -> str:
    """An argparse epilog naming the environment variables a command reads (use it with
    RawDescriptionHelpFormatter so the lines stay as written)."""
    listed = ", ".join(dict.fromkeys(names))
    lines = textwrap.fill(
        listed, 88, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False, break_long_words=False
    )
    return f"environment variables ({note}):\n{lines}"


def read_settings(prog: str, from_env: Callable[[], T]) -> T | None:
    """The settings `from_env` reads, or None after printing why they cannot be read
    (`<prog>: <error>` on stderr; the command then exits 2)."""
    try:
        return from_env()
    except OnboardingError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return None


def stop_on_signals(stop: Callable[[signal.Signals], None]) -> None:
    """Call `stop` on SIGTERM or SIGINT; after it the default action is back, so a second
    signal ends the process at once."""

    def on_signal(signum: int, _frame: Any) -> None:
        stop(signal.Signals(signum))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
