"""`onboarding-model`: train, evaluate, promote, roll back and explain the risk model.

    onboarding-model train [--repeats N] [--kind KIND] [--if-missing] [--no-promote]
    onboarding-model evaluate [--candidates a,b] [--repeats N] [--folds K] [--dataset NAME]
                              [--bootstrap N] [--markdown FILE]
    onboarding-model list | history
    onboarding-model promote VERSION [--force]
    onboarding-model rollback
    onboarding-model explain [--file APPLICATION.json | --sample]
    onboarding-model card [VERSION] [--plots DIR]
    onboarding-model bench [--n N]
    onboarding-model verify [VERSION]
    onboarding-model replay [--since T] [--until T] [--archive PATH] [--model VERSION]
                            [--markdown FILE] [--plot FILE]
    onboarding-model sign VERSION

`onboarding-train` is `onboarding-model train`.

Environment: RISK_MODEL_DIR, RISK_REVIEW_COST, RISK_REVIEW_CAPACITY, RISK_GATE_MAX_COST_INCREASE,
RISK_GATE_MAX_AUC_DROP, RISK_GATE_MAX_FAIRNESS_WORSENING, ONBOARDING_DATASET (german_credit or
credit_data: the data set and feature contract; `evaluate --dataset` overrides it),
MODEL_SIGNING_KEY[_FILE] (signs trained versions), MODEL_VERIFY_KEY[_FILE] (checks them),
MODEL_SIGNING_REQUIRE_KEY (true: refuse the development key), REDIS_URL and DECISIONS_STREAM (replay reads
the decision records), ONBOARDING_HOME; read with the same settings as the realtime task:
DECISION_MARKER_TTL_S, DECISION_KEY_TTL_S, REVIEW_DEADLINE_S, SHADOW_MODEL_VERSION,
ONBOARDING_GIT_SHA (docs/configuration.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from onboarding.console import add_version
from onboarding.errors import OnboardingError
from risk.artifacts import current_version, load_model
from risk.datasets import dataset
from risk.errors import RiskError
from risk.evaluation import CANDIDATES, evaluate, interval_table, markdown_table, no_worse_verdict, paired_bootstrap
from risk.fairness import markdown_table as fairness_table
from risk.model import MODEL_KIND, load_dataset, probability_bad, reason_codes
from risk.policy import CostMatrix
from risk.registry import history, metadata, promote, rollback, sign_current, train_version, versions
from risk.settings import RiskSettings


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="evaluate by repeated CV, fit, save, promote through the gate",
        epilog=__doc__[__doc__.index("Environment:") :],  # `onboarding-train --help` shows this parser
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--repeats", type=int, default=3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--kind", help=f"training procedure (default: the data set's service kind; German credit: {MODEL_KIND})"
    )
    train.add_argument("--if-missing", action="store_true", help="do nothing if a model is in service")
    train.add_argument("--no-promote", action="store_true", help="save the version only")
    ev = sub.add_parser("evaluate", help="compare candidates and baselines on the same folds")
    ev.add_argument("--candidates", default="decline_everyone,logistic_plain,logistic")
    ev.add_argument("--repeats", type=int, default=5)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--folds", type=int, default=10, help="outer folds per repeat (default 10)")
    ev.add_argument("--dataset", help="german_credit or credit_data (default: ONBOARDING_DATASET, german_credit)")
    ev.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="paired bootstrap resamples for the 95%% intervals against the service's kind (0: none)",
    )
    ev.add_argument(
        "--service",
        help="the candidate the intervals compare the others with (default: the data set's service kind)",
    )
    ev.add_argument("--markdown", type=Path, help="also write the table to this file")
    sub.add_parser("list", help="versions, the current one marked")
    sub.add_parser("history", help="promotions and rollbacks")
    pr = sub.add_parser("promote", help="make a version current if its signature verifies and it passes the gate")
    pr.add_argument("version")
    pr.add_argument(
        "--force", action="store_true", help="promote even if the gate fails (never a version that does not verify)"
    )
    sub.add_parser("rollback", help="put back the version in service before the current one, if it verifies")
    ex = sub.add_parser("explain", help="score one application and say why")
    ex.add_argument("--file", type=Path, help="a JSON application (or whole signup event)")
    ex.add_argument("--sample", action="store_true", help="a sample applicant from the data set")
    card = sub.add_parser("card", help="write the model card (markdown + plots) of a version")
    card.add_argument("version", nargs="?")
    card.add_argument("--plots", type=Path, help="also copy the plots here as model-<name>.png (for the docs)")
    bench = sub.add_parser("bench", help="in-process scoring latency of the current model")
    bench.add_argument("--n", type=int, default=2000)
    vf = sub.add_parser("verify", help="check a version's signed manifest (default: the current version)")
    vf.add_argument("version", nargs="?")
    sg = sub.add_parser(
        "sign", help="sign a version trained before versions were signed (only one you trust: it vouches for it)"
    )
    sg.add_argument("version")
    sub.add_parser(
        "sign-current",
        help="sign CURRENT as it is (a pointer written before pointers were signed); the version must verify",
    )
    rp = sub.add_parser(
        "replay",
        help="re-decide recorded decisions with their recorded model versions and report every difference "
        "(exit 1 if any); with --model, a backtest of that version on them",
    )
    rp.add_argument("--since", type=_time, help="decided at or after (RFC 3339; default: the oldest record)")
    rp.add_argument("--until", type=_time, help="decided before (RFC 3339; default: now)")
    rp.add_argument("--archive", type=Path, help="also the archived records: the archive folder or one file")
    rp.add_argument("--no-redis", action="store_true", help="only the archive, not the records in Redis")
    rp.add_argument("--model", help="backtest this version (a challenger) instead of replaying")
    rp.add_argument("--markdown", type=Path, help="backtest: also write the table to this file")
    rp.add_argument("--plot", type=Path, help="backtest: also draw the decision and age-band rates (PNG)")
    args = parser.parse_args(argv)
    try:
        settings = RiskSettings.from_env()
        return COMMANDS[args.command](settings, args)
    except (OnboardingError, RiskError) as err:
        print(f"onboarding-model: {err}", file=sys.stderr)
        return 1


def _costs(settings: RiskSettings) -> CostMatrix:
    return CostMatrix(review_cost=settings.review_cost)


def cmd_train(settings: RiskSettings, args: argparse.Namespace) -> int:
    model_dir = settings.model_dir
    if args.if_missing:
        try:
            print(f"model {current_version(model_dir)} is in service in {model_dir}; nothing to do")
            return 0
        except RiskError:
            pass
    started = time.monotonic()
    print(f"training: {args.repeats} x 10-fold CV, then a fit on all applicants", file=sys.stderr)
    data = load_dataset(settings.streams.dataset)
    version = train_version(
        model_dir,
        data,
        _costs(settings),
        settings.review_capacity,
        args.repeats,
        args.seed,
        progress=_progress,
        kind=args.kind or dataset(data.dataset).service_kind,
        signer=settings.signer(),
    )
    meta = metadata(model_dir, version)
    from risk.card import write_card

    write_card(model_dir / version, meta)
    result: dict[str, Any] = {
        "version": version,
        "metrics": {k: v for k, v in meta["metrics"].items() if k != "calibration"},
    }
    if not args.no_promote:
        result["promotion"] = promote(
            model_dir,
            version,
            settings.gate(),
            data=data,
            progress=_progress,
            verifier=settings.verifier(),
            signer=settings.signer(),
        )
        result["current"] = version
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


def cmd_evaluate(settings: RiskSettings, args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        print(f"unknown candidates {unknown}; known: {sorted(CANDIDATES)}", file=sys.stderr)
        return 2
    data = load_dataset(args.dataset or settings.streams.dataset)
    started = time.monotonic()
    print(
        f"evaluating {len(names)} candidates on {data.dataset} ({len(data.bad)} applicants): "
        f"{args.repeats} x {args.folds}-fold CV, {len(names) * args.repeats * args.folds} fits",
        file=sys.stderr,
    )
    reports = evaluate(
        data.applications,
        data.bad,
        names,
        _costs(settings),
        settings.review_capacity,
        repeats=args.repeats,
        folds=args.folds,
        seed=args.seed,
        progress=_progress,
        protected=data.protected,
        data_set=data.dataset,
    )
    table = markdown_table(reports)
    fairness = "\n\n".join(
        f"Fairness of `{name}` (3-way policy, out-of-fold, mean of the repeats):\n\n"
        f"{fairness_table(report.summary()['fairness'])}"
        for name, report in reports.items()
        if CANDIDATES[name].make is not None
    )
    command = f"onboarding-model evaluate --candidates {','.join(names)} --repeats {args.repeats} --seed {args.seed}"
    if args.dataset:
        command += f" --dataset {args.dataset}"
    if args.folds != 10:
        command += f" --folds {args.folds}"
    summaries: dict[str, Any] = {n: r.summary() for n, r in reports.items()}
    intervals = ""
    service = args.service or dataset(data.dataset).service_kind
    if args.service:
        command += f" --service {args.service}"
    if args.bootstrap > 0 and service in reports:
        if args.bootstrap != 1000:
            command += f" --bootstrap {args.bootstrap}"
        _progress(f"paired bootstrap: {args.bootstrap} resamples of {len(data.bad)} applicants")
        found = paired_bootstrap(reports, data.bad, service, args.bootstrap, args.seed)
        verdict = no_worse_verdict(reports, found, service)
        for name, entry in found.items():
            summaries[name]["intervals"] = {k: v.to_dict() for k, v in entry.items()}
        intervals = (
            f"\n\nPaired bootstrap ({args.bootstrap} resamples of the applicants, mean over the repeats), "
            f"95 % intervals:\n\n{interval_table(found, service)}\n\n" + "\n".join(f"- {v}" for v in verdict)
        )
    print(json.dumps(summaries, indent=2))
    seconds = time.monotonic() - started
    cv = f"{args.repeats} x {args.folds}-fold stratified CV on {data.dataset}"
    print(f"\n{table}{intervals}\n\n{fairness}\n\n{cv} in {seconds:.0f} s: `{command}`")
    if args.markdown:
        args.markdown.write_text(f"{table}{intervals}\n\n{fairness}\n\nProduced by `{command}` in {seconds:.0f} s.\n")
    return 0


def cmd_list(settings: RiskSettings, args: argparse.Namespace) -> int:
    for entry in versions(settings.model_dir):
        print(json.dumps(entry))
    return 0


def cmd_history(settings: RiskSettings, args: argparse.Namespace) -> int:
    for entry in history(settings.model_dir):
        print(json.dumps(entry))
    return 0


def cmd_promote(settings: RiskSettings, args: argparse.Namespace) -> int:
    data = load_dataset(settings.streams.dataset)
    reasons = promote(
        settings.model_dir,
        args.version,
        settings.gate(),
        args.force,
        data,
        _progress,
        verifier=settings.verifier(),
        signer=settings.signer(),
    )
    print(json.dumps({"current": args.version, "gate": reasons}))
    return 0


def cmd_rollback(settings: RiskSettings, args: argparse.Namespace) -> int:
    print(json.dumps({"current": rollback(settings.model_dir, settings.verifier(), settings.signer())}))
    return 0


def cmd_explain(settings: RiskSettings, args: argparse.Namespace) -> int:
    if args.file:
        loaded = json.loads(args.file.read_text())
        application = loaded.get("application", loaded)
    else:
        from risk.samples import sample_application

        application = sample_application(random.Random(), settings.streams.dataset)
    model = load_model(settings.model_dir, current_version(settings.model_dir), settings.streams.dataset)
    p = probability_bad(model.scorer, application)
    print(
        json.dumps(
            {
                "model_version": model.version,
                "score": round(p, 4),
                "decision": model.policy.decide(p).value,
                "reason_codes": [r.to_dict() for r in reason_codes(model.scorer, application)],
                "application": application,
            },
            indent=2,
        )
    )
    return 0


def cmd_card(settings: RiskSettings, args: argparse.Namespace) -> int:
    from risk.card import write_card

    version = args.version or current_version(settings.model_dir)
    folder = settings.model_dir / version
    print(write_card(folder, metadata(settings.model_dir, version)))
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        for name in ("roc.png", "calibration.png", "scores.png"):
            if (folder / name).is_file():
                target = args.plots / f"model-{name}"
                target.write_bytes((folder / name).read_bytes())
                print(target)
    return 0


def cmd_bench(settings: RiskSettings, args: argparse.Namespace) -> int:
    from risk.samples import sample_application

    model = load_model(settings.model_dir, current_version(settings.model_dir), settings.streams.dataset)
    rng = random.Random(0)
    applications = [sample_application(rng, settings.streams.dataset) for _ in range(200)]
    for application in applications[:20]:  # warm up
        probability_bad(model.scorer, application)
    score_only, with_reasons = [], []
    for i in range(args.n):
        application = applications[i % len(applications)]
        t0 = time.perf_counter()
        probability_bad(model.scorer, application)
        t1 = time.perf_counter()
        reason_codes(model.scorer, application)
        t2 = time.perf_counter()
        score_only.append((t1 - t0) * 1000)
        with_reasons.append((t2 - t0) * 1000)
    result = {
        "model_version": model.version,
        "n": args.n,
        "score_ms": {
            "p50": round(float(np.percentile(score_only, 50)), 3),
            "p99": round(float(np.percentile(score_only, 99)), 3),
        },
        "score_and_reasons_ms": {
            "p50": round(float(np.percentile(with_reasons, 50)), 3),
            "p99": round(float(np.percentile(with_reasons, 99)), 3),
        },
        "command": f"onboarding-model bench --n {args.n}",
    }
    print(json.dumps(result, indent=2))
    return 0


def cmd_verify(settings: RiskSettings, args: argparse.Namespace) -> int:
    from risk.artifacts import current_pointer
    from risk.integrity import verify_version

    result: dict[str, object] = {}
    if args.version is None:  # the version in service: CURRENT's signature first
        pointer = current_pointer(settings.model_dir, settings.verifier())
        result["current"] = {"sequence": pointer.sequence, "promoted_at": pointer.promoted_at, "verified": True}
    version = args.version or current_version(settings.model_dir)
    digest = verify_version(settings.model_dir / version, settings.verifier())
    print(json.dumps({"version": version, "verified": True, "content_sha256": digest, **result}))
    return 0


def cmd_sign_current(settings: RiskSettings, args: argparse.Namespace) -> int:
    pointer = sign_current(settings.model_dir, settings.verifier(), settings.signer())
    print(json.dumps({"current": pointer.version, "sequence": pointer.sequence, "signed": True}))
    return 0


def cmd_sign(settings: RiskSettings, args: argparse.Namespace) -> int:
    from risk.integrity import sign_version

    folder = settings.model_dir / args.version
    metadata(settings.model_dir, args.version)  # refuses a version that does not exist
    digest = sign_version(folder, settings.signer())
    print(json.dumps({"version": args.version, "signed": True, "content_sha256": digest}))
    return 0


def _time(value: str) -> datetime:
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _counted(what: str) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        print(f"  .. {what} {done}/{total}", file=sys.stderr, flush=True)

    return progress


def cmd_replay(settings: RiskSettings, args: argparse.Namespace) -> int:
    from onboarding.redis_clients import Role, connect
    from risk.replay import backtest, read_records, replay

    client = None if args.no_redis else connect(settings.streams.redis_url, Role.CLI)
    records = read_records(client, settings.streams.decisions_stream, args.archive, args.since, args.until)
    print(f"replay: {len(records)} decision records", file=sys.stderr)
    if args.model:
        result = backtest(
            records, settings.model_dir, args.model, settings.verifier(), _costs(settings), _counted("scored")
        )
        table = result.markdown()
        print(table)
        if args.markdown:
            args.markdown.write_text(table + "\n")
        if args.plot:
            result.plot(args.plot)
            print(f"plot: {args.plot}", file=sys.stderr)
        return 0
    report = replay(records, settings.model_dir, settings.verifier(), _counted("replayed"))
    print(json.dumps(report.to_dict(), indent=2))
    return 1 if report.differences else 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "list": cmd_list,
    "history": cmd_history,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "explain": cmd_explain,
    "card": cmd_card,
    "bench": cmd_bench,
    "verify": cmd_verify,
    "sign": cmd_sign,
    "sign-current": cmd_sign_current,
    "replay": cmd_replay,
}


def train_main(argv: list[str] | None = None) -> int:
    """`onboarding-train [args]`: the same as `onboarding-model train [args]`."""
    args = sys.argv[1:] if argv is None else argv
    if "--version" in args:  # the program's own, not `train`'s
        return main(["--version"])
    return main(["train", *args])


if __name__ == "__main__":
    raise SystemExit(main())
