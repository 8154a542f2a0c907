"""`onboarding-stack logs`: the last lines of the stack's logs, and following them as they grow.

Following survives what the supervisor does to a log: a rotation (copy, then truncate in
place: the file shrinks, reading resumes from its start) and a component whose log appears
only after it starts. With several logs each line is prefixed with its component's name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


def last_lines(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last `count` lines of a file, or of its first `end` bytes (read from the end, so
    a 50 MiB log costs little)."""
    if count <= 0:
        return []
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell() if end is None else min(end, fh.tell())
        block, data = 64 * 1024, b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
    return data.decode(errors="replace").splitlines()[-count:]


@dataclass
class _Followed:
    path: Path
    offset: int
    partial: str = ""


def follow(
    paths: Callable[[], list[Path]],
    out: TextIO,
    stop: threading.Event,
    backlog: int = 10,
    poll_s: float = 0.25,
    prefix: bool = True,
) -> None:
    """Print the last `backlog` lines of each log, then every line appended, until `stop`.
    `paths` is asked again at every poll: logs that appear later are followed from their start."""
    width = max((len(p.stem) for p in paths()), default=0)
    followed: dict[Path, _Followed] = {}

    def emit(path: Path, line: str) -> None:
        out.write(f"{path.stem:<{width}} | {line}\n" if prefix else f"{line}\n")

    for path in paths():
        size = path.stat().st_size  # what is written after this is followed, not backlog
        for line in last_lines(path, backlog, end=size):
            emit(path, line)
        followed[path] = _Followed(path, size)
    out.flush()
    while not stop.wait(poll_s):
        for path in paths():
            state = followed.setdefault(path, _Followed(path, 0))
            width = max(width, len(path.stem))
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < state.offset:  # rotated (copy-truncate): the rest is in the copy
                state.offset, state.partial = 0, ""
            if size == state.offset:
                continue
            with path.open("rb") as fh:
                fh.seek(state.offset)
                chunk = fh.read(size - state.offset)
            state.offset += len(chunk)
            text = state.partial + chunk.decode(errors="replace")
            *lines, state.partial = text.split("\n")
            for line in lines:
                emit(path, line)
        out.flush()
