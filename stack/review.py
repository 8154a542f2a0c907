"""The review page's logins in the local stack: a session secret and a demo reviewer.

`onboarding-stack up` makes them once, under `<home>/review/`, and keeps them across
restarts (a new secret would log everybody out; a new password would surprise whoever
wrote the old one down):

    session.secret    the key that signs the page's session cookies (0600)
    reviewers.json    REVIEW_USERS_FILE: reviewers and their password hashes (0600,
                      written by review.auth.add_reviewer, as `onboarding-review add-reviewer` does)
    reviewer.password the demo reviewer's password (0600); never printed

More reviewers: `onboarding-review add-reviewer NAME` run by hand takes REVIEW_USERS_FILE
from the stack's settings (onboarding.settings.use_stack_defaults); the page reads the
file again when it changes.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from review.auth import add_reviewer, load_reviewers

DEMO_REVIEWER = "reviewer"


@dataclass(frozen=True)
class ReviewLogins:
    home: Path  # the stack's home; the files live in home/review

    @property
    def folder(self) -> Path:
        return self.home / "review"

    @property
    def session_secret_file(self) -> Path:
        return self.folder / "session.secret"

    @property
    def users_file(self) -> Path:
        return self.folder / "reviewers.json"

    @property
    def password_file(self) -> Path:
        return self.folder / f"{DEMO_REVIEWER}.password"

    def prepare(self) -> None:
        """Create what is missing (idempotent): the secret, the demo reviewer's password and
        its entry in the reviewers file. Existing values are kept."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        if not _usable(self.session_secret_file):
            _write_private(self.session_secret_file, secrets.token_urlsafe(48))
        new_password = not _usable(self.password_file)
        if new_password:
            _write_private(self.password_file, secrets.token_urlsafe(18))
        # A new password replaces the demo reviewer's entry; other reviewers' are kept.
        if new_password or not self.users_file.exists() or DEMO_REVIEWER not in load_reviewers(self.users_file):
            add_reviewer(self.users_file, DEMO_REVIEWER, self.password_file.read_text(encoding="utf-8").strip())

    def env(self) -> dict[str, str]:
        """The variables that point `onboarding-review` at these files."""
        return {
            "REVIEW_USERS_FILE": str(self.users_file),
            "REVIEW_SESSION_SECRET_FILE": str(self.session_secret_file),
        }


def _usable(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except OSError:
        return False


def _write_private(path: Path, content: str) -> None:
    """Write a secret readable by the owner only, from the first byte; renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content + "\n")
    os.replace(tmp, path)
