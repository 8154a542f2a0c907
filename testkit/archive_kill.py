"""`onboarding-archive` with a crash injected: SIGKILL right after the N-th batch is copied.

    python -m testkit.archive_kill N run --no-lock

runs the real archive CLI (`archiver.cli.main`) with an `after_copy` hook that kills the
process once N batches are copied and verified, before their rows are deleted: the worst
moment for a crash, which the next run must finish without loss or duplicates. The
production command has no such switch; only this test entry point installs the hook.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from archiver.cli import main as archive_main

logger = logging.getLogger("testkit.archive_kill")


def kill_after_copied(batches: int) -> Callable[[], None]:
    """An `after_copy` hook that SIGKILLs this process after the `batches`-th copied batch."""
    if batches < 1:
        raise ValueError(f"kill after {batches} batches: need at least 1")
    copied = 0
    lock = threading.Lock()  # batches are moved by several worker threads

    def after_copy() -> None:
        nonlocal copied
        with lock:
            copied += 1
            if copied == batches:
                logger.warning("archive: fault injected: killing this process after copying batch %d", copied)
                os.kill(os.getpid(), signal.SIGKILL)

    return after_copy


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or not args[0].isdigit():
        print("usage: python -m testkit.archive_kill N ARCHIVE-ARGS...", file=sys.stderr)
        return 2
    return archive_main(args[1:], after_copy=kill_after_copied(int(args[0])))


if __name__ == "__main__":
    raise SystemExit(main())
