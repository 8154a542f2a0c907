"""The review page: the queue and each case, server-rendered, behind a login.

    GET  /login                  the login form         POST /login    check, set the session cookie
    POST /logout                 clear the cookie
    GET  /                       the queue: overdue first, then by deadline; depth and overdue counts
    GET  /case/<id>              a case: details, reason codes, history and its forms
    POST /case/<id>/claim        \
    POST /case/<id>/release       > as the logged-in reviewer, with the form's CSRF token
    POST /case/<id>/decide       /
    GET  /metrics, /livez, /readyz   without a login (Prometheus and the probes)

Every other page redirects to /login without a valid session. The reviewer id of every
action is the logged-in name, never a form field. A refused action (someone else holds or
decided the case) is shown on the case page with 409; no traceback reaches the browser.
Like the SLA page: no JavaScript, every value escaped.
"""

from __future__ import annotations

import html
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from onboarding.errors import OnboardingError
from onboarding.logs import keys
from review.auth import SESSION_COOKIE, Reviewers, Session, Sessions
from review.errors import CaseConflict, CaseNotFound, ReviewError
from review.store import MAX_REASON_CHARS, Case, ReviewQueue, State

logger = logging.getLogger(__name__)

MAX_FORM_BYTES = 16 * 1024
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
QUEUE_REFRESH_S = 30
# No scripts at all, styles only inline, forms only to this server, never framed.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ACTIONS = ("claim", "release", "decide")


class ReviewMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "onboarding_review_http_requests",
            "Requests to the review page by route and HTTP status",
            ["route", "status"],
            registry=self.registry,
        )
        self.login_failures = Counter(
            "onboarding_review_login_failures",
            "Logins refused (unknown name or wrong password)",
            registry=self.registry,
        )


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = HTML
    headers: tuple[tuple[str, str], ...] = ()


def redirect(location: str, *headers: tuple[str, str]) -> Reply:
    return Reply(303, b"", TEXT, (("Location", location), *headers))


class ReviewApp:
    """What the handler needs: the queue, the reviewers, the sessions, the metrics."""

    def __init__(
        self,
        queue: ReviewQueue,
        reviewers: Reviewers,
        sessions: Sessions,
        ready: Callable[[], tuple[bool, str]],
        deadline_s: float,
    ) -> None:
        self.queue = queue
        self.reviewers = reviewers
        self.sessions = sessions
        self.ready = ready
        self.deadline_s = deadline_s
        self.metrics = ReviewMetrics()

    # -- routing -------------------------------------------------------------------------

    def handle(self, method: str, path: str, cookie_header: str | None, form: dict[str, str]) -> tuple[str, Reply]:
        """(route label, reply) of one request."""
        public = self.public_reply(method, path, form)
        if public is not None:
            return path, public
        session = self.session(cookie_header)
        if path == "/logout" and method == "POST":
            return "/logout", redirect("/login", ("Set-Cookie", Sessions.clear_cookie()))
        route, case_id, action = _route(path)
        if route == "other":
            return route, Reply(404, page("Not found", "<p>No such page. <a href='/'>The queue</a>.</p>").encode())
        if session is None:
            return route, redirect("/login")
        return route, self.reviewer_reply(method, session, case_id, action, form)

    def public_reply(self, method: str, path: str, form: dict[str, str]) -> Reply | None:
        """The pages without a login: the metrics, the probes and the login form (None for any
        other page). Their route label is their path."""
        if method == "GET" and path == "/metrics":
            return Reply(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        if method == "GET" and path in ("/livez", "/readyz"):
            ok, why = (True, "serving") if path == "/livez" else self.ready()
            return Reply(200 if ok else 503, f"{why}\n".encode(), TEXT)
        if path == "/login":
            return self.login(form) if method == "POST" else Reply(200, login_page().encode())
        return None

    def reviewer_reply(
        self, method: str, session: Session, case_id: str | None, action: str | None, form: dict[str, str]
    ) -> Reply:
        """A logged-in reviewer's request: an action on a case (a POST with the form's CSRF
        token), the queue or a case page (a GET)."""
        if method == "POST" and action is not None and case_id is not None:
            if not self.sessions.csrf_ok(session, form.get("csrf", "")):
                return Reply(403, page("Refused", "<p>The form's token is missing or stale: reload the "
                                       "page and try again.</p>").encode())  # fmt: skip
            return self.act(session, case_id, action, form)
        if method != "GET" or action is not None:
            return Reply(405, page("Not allowed", "<p>Use the page's forms.</p>").encode())
        try:
            if case_id is None:
                return Reply(200, queue_page(self.queue.pending(limit=1000), session, self).encode())
            return self.case_reply(session, case_id)
        except CaseNotFound as err:
            return Reply(404, page("No such case", f"<p>{html.escape(str(err))}</p>", session, self).encode())

    def session(self, cookie_header: str | None) -> Session | None:
        if not cookie_header:
            return None
        try:
            jar = SimpleCookie(cookie_header)
        except CookieError:
            return None
        morsel = jar.get(SESSION_COOKIE)
        found = self.sessions.check(morsel.value) if morsel is not None else None
        # A reviewer removed from the file is logged out at once.
        return found if found is not None and found.reviewer in self.reviewers else None

    # -- actions -------------------------------------------------------------------------

    def login(self, form: dict[str, str]) -> Reply:
        name = form.get("name", "").strip()
        if self.reviewers.authenticate(name, form.get("password", "")):
            logger.info("review: %s logged in", name)
            return redirect("/", ("Set-Cookie", self.sessions.set_cookie(self.sessions.issue(name))))
        self.metrics.login_failures.inc()
        logger.warning("review: a login as %r was refused", name[:64])
        return Reply(401, login_page("Wrong name or password.").encode())

    def act(self, session: Session, case_id: str, action: str, form: dict[str, str]) -> Reply:
        reviewer = session.reviewer
        location = case_path(case_id)
        try:
            if action == "claim":
                self.queue.claim(case_id, reviewer)
            elif action == "release":
                self.queue.release(case_id, reviewer)
            else:
                outcome = form.get("outcome", "")
                decided = self.queue.decide(case_id, reviewer, outcome, form.get("reason", ""))
                if decided.now:
                    logger.info(
                        "review: %s decided the case",
                        reviewer,
                        extra=keys(event_id=case_id, outcome=outcome, entry_id=decided.entry_id),
                    )
                return redirect(location)
            logger.info("review: %s %s the case", reviewer, "claimed" if action == "claim" else "released",
                        extra=keys(event_id=case_id))  # fmt: skip
            return redirect(location)
        except CaseNotFound as err:
            return Reply(404, page("No such case", f"<p>{html.escape(str(err))}</p>", session, self).encode())
        except CaseConflict as err:
            return self.case_reply(session, case_id, error=str(err), status=409, form=form)
        except ReviewError as err:  # a bad outcome or reason: the form again, with the message
            return self.case_reply(session, case_id, error=str(err), status=400, form=form)

    def case_reply(
        self,
        session: Session,
        case_id: str,
        error: str | None = None,
        status: int = 200,
        form: dict[str, str] | None = None,
    ) -> Reply:
        case = self.queue.get(case_id)
        history = self.queue.history(case_id)
        return Reply(status, case_page(case, history, session, self, error, form or {}).encode())


def _route(path: str) -> tuple[str, str | None, str | None]:
    """(route label, case id, action) of a path."""
    if path == "/":
        return "/", None, None
    if path.startswith("/case/"):
        rest = path[len("/case/") :]
        case_part, _, action = rest.partition("/")
        case_id = urllib.parse.unquote(case_part)
        if not case_id:
            return "other", None, None
        if not action:
            return "/case", case_id, None
        if action in ACTIONS:
            return f"/case/{action}", case_id, action
    return "other", None, None


def case_path(case_id: str) -> str:
    return "/case/" + urllib.parse.quote(case_id, safe="")


# -- rendering ---------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f7f9;color:#1d2330}
h1{font-size:1.4rem;margin:0 0 .3rem} .sub{color:#5a6272;margin-bottom:1rem}
header{display:flex;justify-content:space-between;align-items:center;margin-bottom:.8rem}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:.7rem;margin:1rem 0}
.card{background:#fff;border-radius:.4rem;padding:.7rem;box-shadow:0 1px 2px #0002}
.label{font-size:.8rem;color:#5a6272} .value{font-size:1.5rem;font-weight:600}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:1rem}
td,th{border-bottom:1px solid #e3e6eb;padding:.35rem .5rem;text-align:left;font-size:.85rem;vertical-align:top}
tr.overdue td{background:#fdecea} .flag{color:#fff;background:#c0392b;border-radius:.3rem;padding:0 .3rem;
font-size:.75rem}
.error{background:#fdecea;border-left:4px solid #c0392b;padding:.6rem .8rem;margin:1rem 0}
.box{background:#fff;border-radius:.4rem;padding:.8rem 1rem;box-shadow:0 1px 2px #0002;margin-bottom:1rem}
dl{display:grid;grid-template-columns:10rem 1fr;gap:.2rem .8rem;margin:0} dt{color:#5a6272}
textarea{width:100%;min-height:5rem} form.inline{display:inline}
button{padding:.35rem .9rem}
"""


def page(
    title: str, body: str, session: Session | None = None, app: ReviewApp | None = None, refresh_s: int = 0
) -> str:
    e = html.escape
    who = ""
    if session is not None and app is not None:
        who = (
            f'<span>Signed in as <b id="reviewer">{e(session.reviewer)}</b></span> '
            f'<form class="inline" method="post" action="/logout">{csrf_field(session, app)}'
            '<button type="submit">Log out</button></form>'
        )
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>{e(title)} · onboarding review</title>
<style>{STYLE}</style></head><body>
<header><h1>{e(title)}</h1><div>{who}</div></header>
{body}
</body></html>
"""


def csrf_field(session: Session, app: ReviewApp) -> str:
    return f'<input type="hidden" name="csrf" value="{html.escape(app.sessions.csrf_token(session))}">'


def login_page(error: str | None = None) -> str:
    message = f'<div class="error" id="error">{html.escape(error)}</div>' if error else ""
    return page(
        "Review queue: log in",
        f"""{message}<form class="box" method="post" action="/login">
<p><label>Name <input id="name" name="name" autocomplete="username" required></label></p>
<p><label>Password <input id="password" name="password" type="password" autocomplete="current-password" required>
</label></p>
<p><button id="login" type="submit">Log in</button></p></form>""",
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


def queue_page(cases: list[Case], session: Session, app: ReviewApp) -> str:
    e = html.escape
    now = time.time()
    ordered = sorted(cases, key=lambda c: (not c.overdue(now), c.deadline_epoch))
    overdue = sum(1 for c in cases if c.overdue(now))
    mine = sum(1 for c in cases if c.assignee == session.reviewer)
    cards = "".join(
        f'<div class="card"><div class="label">{label}</div><div class="value" id="{key}">{value}</div></div>'
        for label, value, key in (
            ("waiting (open + claimed)", len(cases), "depth"),
            ("open", sum(1 for c in cases if c.state is State.OPEN), "open"),
            ("overdue", overdue, "overdue"),
            ("claimed by me", mine, "mine"),
        )
    )
    rows = []
    for case in ordered:
        late = case.overdue(now)
        score = "n/a" if case.score is None else f"{case.score:.3f}"
        cells = (
            f'<a href="{e(case_path(case.case_id))}">{e(case.case_id)}</a>',
            e(case.user_id),
            e(case.why()),
            e(score),
            e(case.opened_at[:19].replace("T", " ")),
            e(case.deadline_at[:19].replace("T", " ")) + (' <span class="flag">OVERDUE</span>' if late else ""),
            e(case.assignee or "-"),
            e(case.state.value),
        )
        rows.append(f'<tr class="{"overdue" if late else ""}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = "\n".join(rows) or '<tr><td colspan="8">No case is waiting.</td></tr>'
    body = f"""<div class="sub">Cases whose automated decision was <code>review</code>: overdue first, then by
deadline (cases are due {_hours(app.deadline_s)} after they open); refreshes every {QUEUE_REFRESH_S} s.</div>
<div class="cards">{cards}</div>
<table id="queue"><tr><th>case</th><th>user</th><th>why</th><th>score</th><th>opened (UTC)</th>
<th>deadline (UTC)</th><th>assignee</th><th>state</th></tr>
{table}
</table>"""
    return page("Review queue", body, session, app, refresh_s=QUEUE_REFRESH_S)


def case_page(
    case: Case, history: list[Any], session: Session, app: ReviewApp, error: str | None, form: dict[str, str]
) -> str:
    e = html.escape
    me = session.reviewer
    action = e(case_path(case.case_id))
    details: list[tuple[str, str]] = [
        ("state", case.state.value + (" (OVERDUE)" if case.overdue() else "")),
        ("user", case.user_id),
        ("why", case.why()),
        ("score", "n/a" if case.score is None else f"{case.score:.3f}"),
        ("model version", case.model_version or "n/a"),
        ("opened (UTC)", case.opened_at),
        ("deadline (UTC)", case.deadline_at),
        ("assignee", case.assignee or "-"),
    ]
    if case.state is State.DECIDED:
        details += [
            ("outcome", case.outcome or ""),
            ("decided by", case.decided_by or ""),
            ("reason", case.reason or ""),
            ("decided (UTC)", case.decided_at or ""),
        ]
    ids = {"state": "state", "outcome": "outcome", "decided by": "decided-by", "assignee": "assignee"}
    rows = "".join(
        f'<dt>{e(k)}</dt><dd id="{ids[k]}">{e(v)}</dd>' if k in ids else f"<dt>{e(k)}</dt><dd>{e(v)}</dd>"
        for k, v in details
    )
    reasons = (
        "".join(
            f"<tr><td>{e(str(r.get('code', '')))}</td><td>{e(str(r.get('text', '')))}</td>"
            f"<td>{e(str(r.get('contribution', '')))}</td></tr>"
            for r in case.reason_codes
        )
        or '<tr><td colspan="3">none</td></tr>'
    )
    lines = (
        "".join(
            f"<tr><td>{e(h.at)}</td><td>{e(h.action)}</td><td>{e(h.actor)}</td><td>{e(h.detail)}</td></tr>"
            for h in history
        )
        or '<tr><td colspan="4">none kept in Redis (see onboarding-archive audit)</td></tr>'
    )
    token = csrf_field(session, app)
    forms = []
    if case.state is State.OPEN:
        forms.append(f'<form class="inline" method="post" action="{action}/claim">{token}'
                     '<button id="claim" type="submit">Claim</button></form>')  # fmt: skip
    if case.state is State.CLAIMED and case.assignee == me:
        forms.append(f'<form class="inline" method="post" action="{action}/release">{token}'
                     '<button id="release" type="submit">Release</button></form>')  # fmt: skip
    if case.state is State.OPEN or (case.state is State.CLAIMED and case.assignee == me):
        chosen = form.get("outcome", "")
        radios = "".join(
            f'<label><input type="radio" id="outcome-{o}" name="outcome" value="{o}" required'
            f"{' checked' if chosen == o else ''}> {o}</label> "
            for o in ("approve", "decline")
        )
        forms.append(
            f"""<form class="box" method="post" action="{action}/decide">{token}
<p>{radios}</p>
<p><label>Reason (goes to the applicant's file and the audit)<br>
<textarea id="reason" name="reason" required maxlength="{MAX_REASON_CHARS}">{e(form.get("reason", ""))}</textarea>
</label></p>
<p><button id="decide" type="submit">Decide</button></p></form>"""
        )
    elif case.state is State.CLAIMED:
        forms.append(f"<p>Claimed by {e(case.assignee or '')}; only they can decide or release it.</p>")
    message = f'<div class="error" id="error">{e(error)}</div>' if error else ""
    body = f"""<p><a href="/">← the queue</a></p>{message}
<div class="box"><dl>{rows}</dl></div>
<div id="actions">{"".join(forms)}</div>
<h2>Reason codes</h2>
<table id="reasons"><tr><th>code</th><th>what</th><th>contribution</th></tr>{reasons}</table>
<h2>History</h2>
<table id="history"><tr><th>at (UTC)</th><th>action</th><th>by</th><th>detail</th></tr>{lines}</table>"""
    return page(f"Case {case.case_id}", body, session, app)


# -- the server --------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    app: ReviewApp
    server_version = "onboarding-review"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve("GET", {})

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_FORM_BYTES:
            self._send("other", Reply(413, b"form too large\n", TEXT))
            return
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        form = {k: v for k, v in urllib.parse.parse_qsl(raw, keep_blank_values=True)}
        self._serve("POST", form)

    def _serve(self, method: str, form: dict[str, str]) -> None:
        path = self.path.split("?", 1)[0]
        try:
            route, reply = self.app.handle(method, path, self.headers.get("Cookie"), form)
        except (redis.RedisError, OnboardingError) as err:
            logger.error("review: %s %s failed: %s", method, path.split("/")[1][:20], err)
            route = _route(path)[0]
            text = "The review queue is unavailable right now (Redis did not answer); try again shortly."
            if isinstance(err, OnboardingError):
                text = str(err)
            reply = Reply(503, page("Unavailable", f'<p class="error">{html.escape(text)}</p>').encode())
        except Exception:  # never a traceback to the browser
            logger.exception("review: %s %s failed", method, path.split("/")[1][:20])
            route = _route(path)[0]
            reply = Reply(500, page("Error", "<p class='error'>Something went wrong; it is logged.</p>").encode())
        self._send(route, reply)

    def _send(self, route: str, reply: Reply) -> None:
        self.app.metrics.requests.labels(route, str(reply.status)).inc()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in (*HEADERS.items(), *reply.headers):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the actions are logged by the app; scrapes would drown the log


def serve_review(app: ReviewApp, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the page on a daemon thread; returns the server (port 0 picks one)."""
    server = ThreadingHTTPServer((host, port), type("Handler", (_Handler,), {"app": app}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.1,), name="review-http", daemon=True).start()
    return server


def redis_ready(client: redis.Redis) -> Callable[[], tuple[bool, str]]:
    def ready() -> tuple[bool, str]:
        try:
            client.ping()
        except redis.RedisError as err:
            return False, f"redis unreachable: {err}"
        return True, "ok"

    return ready
