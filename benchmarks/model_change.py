"""Change control for the risk model, measured (issue 29, items 2 and 3): decide sample
applicants through the onboarding task's body with a champion in service (and, with
`--shadow`, a challenger scored beside it), then replay every decision record (the differences
must be 0) and backtest the challenger on them, and measure the shadow's extra time per decision.

    .venv/bin/python benchmarks/model_change.py --redis-url redis://127.0.0.1:6379/15 \\
        --n 1000 --plot docs/img/backtest.png

Champion: the service's model (boosted trees, seed 0); challenger (`--challenger`): the same
procedure with seed 1 (`boosted`: a retrained champion, the usual challenger) or the logistic
candidate (`logistic`); both fitted on all of German credit with the policy of the default costs
(`testkit.model`), signed with the development key in a scratch model directory. The
applicants are `risk.samples` applicants (real German-credit rows with jittered amounts), decided in this process by
`airflow_adapter.tasks.decide_and_publish` against a real Redis (the database is flushed).
Prints the replay report, the backtest table, and the shadow's cost: per decision, the task
body's time with and without the shadow (p50, p99) and the shadow scoring's own time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def train(model_dir: Path, kind: str) -> tuple[str, str]:
    """A champion (boosted, current) and a challenger (`kind`), both signed."""
    from risk.artifacts import save_model
    from risk.model import fit, load_training_data
    from risk.policy import CostMatrix, Policy

    data = load_training_data()
    policy = Policy.from_costs(CostMatrix(review_cost=0.7))
    log("fitting the champion (boosted trees)")
    champion = save_model(model_dir, fit(data), policy, data.sha256, {}, make_current=True)
    log(f"fitting the challenger ({kind})")
    fitted = fit(data, seed=1, kind=kind)
    challenger = save_model(model_dir, fitted, policy, data.sha256, {}, make_current=False)
    return champion, challenger


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def decide(n: int, seed: int) -> list[float]:
    """Decide `n` sample applicants through the task body; each call's seconds."""
    from airflow_adapter import tasks
    from risk.samples import new_signup

    tasks.settings.cache_clear()
    tasks.model()  # loaded (and verified) once, as the realtime instance warms it before forking
    rng = random.Random(seed)
    seconds = []
    for i in range(n):
        signup = new_signup(rng=rng)
        t0 = time.perf_counter()
        tasks.decide_and_publish({**signup, "accepted_at": signup["occurred_at"]}, None, None)
        seconds.append(time.perf_counter() - t0)
        if (i + 1) % 200 == 0 or i + 1 == n:
            log(f"decided {i + 1}/{n}")
    return seconds


def scoring_times(model_dir: Path, champion: str, challenger: str, records: list[dict]) -> dict[str, list[float]]:
    """Milliseconds to score each recorded application (`probability_bad` and the policy), for
    the champion and the challenger, in a loop: the shadow's cost without Redis or the task."""
    from risk.artifacts import load_model
    from risk.model import probability_bad

    out: dict[str, list[float]] = {}
    for name, version in (("champion score + policy", champion), ("shadow score + policy", challenger)):
        model = load_model(model_dir, version)
        times = []
        for record in records:
            application = record["inputs"]["application"]
            t0 = time.perf_counter()
            model.policy.decide(round(probability_bad(model.scorer, application), 6))
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = times
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", required=True, help="a Redis database this run may flush")
    parser.add_argument("--n", type=int, default=1000, help="applicants to decide (default 1000)")
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--challenger", choices=("boosted", "logistic"), default="boosted")
    parser.add_argument("--plot", type=Path, help="write the backtest's plot here (PNG)")
    parser.add_argument("--markdown", type=Path, help="write the backtest's table here")
    args = parser.parse_args(argv)

    import logging

    import structlog

    # The task's per-decision log lines (structlog once Airflow is imported) would flood stdout.
    from airflow_adapter import tasks  # noqa: F401  (imports Airflow, which configures structlog)
    from onboarding import keys
    from onboarding.redis_clients import Role, connect
    from risk.integrity import Signer
    from risk.policy import CostMatrix
    from risk.replay import backtest, read_records, replay

    logging.getLogger().setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    client = connect(args.redis_url, Role.CLI)
    with tempfile.TemporaryDirectory(prefix="model-change-") as scratch:
        model_dir = Path(scratch) / "models"
        champion, challenger = train(model_dir, args.challenger)
        os.environ.update({"REDIS_URL": args.redis_url, "RISK_MODEL_DIR": str(model_dir)})
        os.environ.pop("SHADOW_MODEL_VERSION", None)
        client.flushdb()
        log(f"without a shadow: {args.n} decisions")
        plain = decide(args.n, args.seed)
        os.environ["SHADOW_MODEL_VERSION"] = challenger
        log(f"with the shadow {challenger}: {args.n} decisions")
        client.flushdb()
        shadowed = decide(args.n, args.seed)
        records = read_records(client, keys.DECISIONS_STREAM)
        verifier = Signer().verifier()
        log(f"replaying {len(records)} records")
        report = replay(records, model_dir, verifier)
        result = backtest(records, model_dir, challenger, verifier, CostMatrix(review_cost=0.7))
        shadow_ms = [r["shadow"]["seconds"] * 1000 for r in records if r.get("shadow")]
        agree = sum(r["shadow"]["decision"] == r["decision"] for r in records if r.get("shadow"))
        print(json.dumps({"champion": champion, "challenger": challenger, "replay": report.to_dict()}, indent=2))
        print()
        print(result.markdown())
        print()
        print(f"Shadow {challenger} beside {champion}, {args.n} decisions each way (ms per decision):")
        print("| | p50 | p99 |")
        print("|---|---|---|")
        print(
            f"| task body without shadow | {1000 * statistics.median(plain):.2f} "
            f"| {1000 * percentile(plain, 0.99):.2f} |"
        )
        print(
            f"| task body with shadow | {1000 * statistics.median(shadowed):.2f} "
            f"| {1000 * percentile(shadowed, 0.99):.2f} |"
        )
        if shadow_ms:
            print(f"| shadow scoring alone | {statistics.median(shadow_ms):.3f} | {percentile(shadow_ms, 0.99):.3f} |")
            print(f"shadow agreement with the champion: {agree}/{len(shadow_ms)} = {agree / len(shadow_ms):.1%}")
        isolated = scoring_times(model_dir, champion, challenger, records)
        for name, values in isolated.items():
            p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
            print(f"| {name}, in a loop without Redis | {p50:.3f} | {p99:.3f} |")
        if args.plot:
            result.plot(args.plot)
            log(f"plot: {args.plot}")
        if args.markdown:
            args.markdown.write_text(result.markdown() + "\n")
    client.flushdb()
    return 1 if report.differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
