"""`onboarding-stack`: run the service on this machine.

onboarding-stack demo     up, then publish a sample signup and print its decision
onboarding-stack up       Redis (if none answers), the realtime Airflow, the listener
onboarding-stack status   which parts are up
onboarding-stack down     stop everything this command started
onboarding-stack logs [NAME]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time

import httpx
import redis

from onboarding.decision import wait_for_decision
from onboarding.errors import OnboardingError
from onboarding.publisher import new_signup, publish_signup
from onboarding.settings import StreamSettings, redacted_url
from risk.artifacts import current_version, load_model
from risk.errors import RiskError
from risk.settings import RiskSettings
from stack.errors import StackError
from stack.instance import AirflowInstance, InstanceSpec, current_env
from stack.processes import ManagedProcess
from stack.settings import StackSettings


class Stack:
    """The local deployment: Redis (only if we had to start it), realtime Airflow, listener."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        home = settings.home
        self.model_dir = RiskSettings.from_env().model_dir
        base_env = {**current_env(), "REDIS_URL": settings.redis_url, "RISK_MODEL_DIR": str(self.model_dir)}
        self.realtime = AirflowInstance(
            InstanceSpec.from_deploy(
                "realtime",
                home / "realtime",
                settings.realtime_api_port,
                settings.realtime_scheduler_health_port,
                settings.database_url,
            ),
            base_env,
        )
        self.listener = ManagedProcess(
            name="listener",
            argv=[sys.executable, "-m", "listener"],
            env={
                **base_env,
                "AIRFLOW_API_URL": self.realtime.spec.api_url,
                "AIRFLOW_USERNAME": "listener",
                "AIRFLOW_PASSWORD_FILE": str(self.realtime.listener_password_file),
                "LISTENER_METRICS_PORT": str(settings.listener_metrics_port),
                "LISTENER_CONSUMER": "listener-1",
            },
            run_dir=home / "run",
            log_dir=home / "logs",
        )
        self.redis_process = ManagedProcess(
            name="redis",
            argv=[
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(_redis_port(settings.redis_url)),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(home / "redis"),
            ],
            env=current_env(),
            run_dir=home / "run",
            log_dir=home / "logs",
        )

    def all_processes(self) -> list[ManagedProcess]:
        return [self.redis_process, *self.realtime.processes(), self.listener]

    def ensure_redis(self) -> None:
        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2)
        try:
            client.ping()
            return
        except redis.RedisError:
            pass
        if shutil.which("redis-server") is None:
            raise StackError(
                f"no Redis answers at {redacted_url(self.settings.redis_url)} and redis-server is not installed; "
                "install it (apt-get install redis-server) or set REDIS_URL"
            )
        (self.settings.home / "redis").mkdir(parents=True, exist_ok=True)
        step(f"starting redis-server on {redacted_url(self.settings.redis_url)}")
        self.redis_process.start()
        for _ in range(50):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise StackError(f"redis-server did not start:\n{self.redis_process.tail()}")

    def ensure_model(self) -> None:
        try:
            version = current_version(self.model_dir)
            load_model(self.model_dir, version)  # refuses a model that no longer fits the schema
            step(f"risk model {version}")
            return
        except RiskError as err:
            step(f"no usable risk model ({err}); training one (about a minute)")
        from risk.cli import train_main

        if train_main(["--repeats", "1"]) != 0:
            raise StackError("training the risk model failed")

    def up(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.ensure_redis()
        self.ensure_model()
        db = "PostgreSQL" if self.settings.database_url else "SQLite"
        step(f"preparing the realtime Airflow instance ({db} metadata) in {self.realtime.home}")
        self.realtime.prepare()
        self.realtime.migrate()
        step("starting the realtime Airflow: api-server, scheduler, dag-processor")
        self.realtime.start()
        took = self.realtime.wait_ready(("onboarding",), timeout_s=240)
        step(f"realtime Airflow ready in {took:.0f} s at {self.realtime.spec.api_url}")
        self.listener.start()
        self._wait_listener()
        step(f"listener up (metrics and health on 127.0.0.1:{self.settings.listener_metrics_port})")

    def _wait_listener(self, timeout_s: float = 30) -> None:
        url = f"http://127.0.0.1:{self.settings.listener_metrics_port}/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.listener.running():
                raise StackError(f"the listener exited:\n{self.listener.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise StackError(f"the listener is not healthy after {timeout_s:.0f} s:\n{self.listener.tail()}")

    def down(self) -> None:
        # Listener first: it finishes the entry in hand; then Airflow; Redis last.
        if self.listener.stop(timeout_s=40):
            step("stopped listener")
        self.realtime.stop()
        step("stopped realtime Airflow")
        if self.redis_process.stop():
            step("stopped redis-server")

    def status(self) -> dict[str, str]:
        out = {}
        for process in self.all_processes():
            pid = process.pid()
            out[process.name] = f"up (pid {pid})" if pid else "down"
        if out["redis"] == "down":
            try:
                redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1).ping()
                out["redis"] = f"up (external, {redacted_url(self.settings.redis_url)})"
            except redis.RedisError:
                pass
        return out


def _redis_port(url: str) -> int:
    from urllib.parse import urlparse

    return urlparse(url).port or 6379


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def demo(stack: Stack) -> int:
    stack.up()
    streams = StreamSettings.from_env()
    client = redis.Redis.from_url(streams.redis_url)
    last = client.xrevrange(streams.decisions_stream, count=1)
    start_id = last[0][0].decode() if last else "0-0"
    event = new_signup()
    publish_signup(client, streams.signups_stream, event)
    step(f"published sample signup {event['event_id']} for {event['user_id']}; waiting for its decision")
    decision = wait_for_decision(client, streams.decisions_stream, event["event_id"], 60, start_id)
    if decision is None:
        print("no decision within 60 s; see `onboarding-stack logs`", file=sys.stderr)
        return 1
    print(json.dumps(decision.to_dict(), indent=2))
    latency = decision.latency_s("accepted_at", "published_at")
    step(
        f"decision: {decision.decision.upper()} (score {decision.score}) "
        f"in {latency:.2f} s after the listener accepted it"
    )
    print(
        "\nSend more:      .venv/bin/onboarding-publish --count 5 --wait 30\n"
        "Read decisions: .venv/bin/onboarding-decisions --follow\n"
        "Status / logs:  scripts/demo status | scripts/demo logs listener\n"
        f"Airflow UI:     {stack.realtime.spec.api_url}  (user admin, password in "
        f"{stack.realtime.home / 'passwords.json'})\n"
        "Stop:           scripts/demo down"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["demo", "up", "down", "status", "logs"])
    parser.add_argument("name", nargs="?", help="for logs: redis, listener, realtime-scheduler, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        stack = Stack(StackSettings.from_env())
        if args.command == "demo":
            return demo(stack)
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            status = stack.status()
            for name, state in status.items():
                print(f"{name:26} {state}")
            return 0 if all(s != "down" for s in status.values()) else 3
        elif args.command == "logs":
            for process in stack.all_processes():
                if args.name in (None, process.name):
                    print(f"--- {process.name} ({process.log_file}) ---")
                    print(process.tail(40))
    except (StackError, OnboardingError) as err:
        print(f"onboarding-stack: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
