"""`onboarding-model`: train, evaluate, promote, roll back and explain the risk model.

    onboarding-model train [--repeats N] [--kind KIND] [--if-missing] [--no-promote]
    onboarding-model evaluate [--candidates a,b] [--repeats N] [--markdown FILE]
    onboarding-model list | history
    onboarding-model promote VERSION [--force]
    onboarding-model rollback
    onboarding-model explain [--file APPLICATION.json | --sample]
    onboarding-model card [VERSION] [--plots DIR]
    onboarding-model bench [--n N]

`onboarding-train` is `onboarding-model train`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from onboarding.errors import OnboardingError
from risk.artifacts import current_version, load_model
from risk.errors import RiskError
from risk.evaluation import CANDIDATES, evaluate, markdown_table
from risk.fairness import markdown_table as fairness_table
from risk.model import MODEL_KIND, load_training_data, probability_bad, reason_codes
from risk.policy import CostMatrix
from risk.registry import history, metadata, promote, rollback, train_version, versions
from risk.settings import RiskSettings


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="evaluate by repeated CV, fit, save, promote through the gate")
    train.add_argument("--repeats", type=int, default=3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--kind", default=MODEL_KIND, help=f"training procedure (default {MODEL_KIND})")
    train.add_argument("--if-missing", action="store_true", help="do nothing if a model is in service")
    train.add_argument("--no-promote", action="store_true", help="save the version only")
    ev = sub.add_parser("evaluate", help="compare candidates and baselines on the same folds")
    ev.add_argument("--candidates", default="decline_everyone,logistic_plain,logistic")
    ev.add_argument("--repeats", type=int, default=5)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--markdown", type=Path, help="also write the table to this file")
    sub.add_parser("list", help="versions, the current one marked")
    sub.add_parser("history", help="promotions and rollbacks")
    pr = sub.add_parser("promote", help="make a version current if it passes the gate")
    pr.add_argument("version")
    pr.add_argument("--force", action="store_true", help="promote even if the gate fails")
    sub.add_parser("rollback", help="put back the version in service before the current one")
    ex = sub.add_parser("explain", help="score one application and say why")
    ex.add_argument("--file", type=Path, help="a JSON application (or whole signup event)")
    ex.add_argument("--sample", action="store_true", help="a sample applicant from the data set")
    card = sub.add_parser("card", help="write the model card (markdown + plots) of a version")
    card.add_argument("version", nargs="?")
    card.add_argument("--plots", type=Path, help="also copy the plots here as model-<name>.png (for the docs)")
    bench = sub.add_parser("bench", help="in-process scoring latency of the current model")
    bench.add_argument("--n", type=int, default=2000)
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
    data = load_training_data()
    version = train_version(
        model_dir,
        data,
        _costs(settings),
        settings.review_capacity,
        args.repeats,
        args.seed,
        progress=_progress,
        kind=args.kind,
    )
    meta = metadata(model_dir, version)
    from risk.card import write_card

    write_card(model_dir / version, meta)
    result: dict[str, Any] = {
        "version": version,
        "metrics": {k: v for k, v in meta["metrics"].items() if k != "calibration"},
    }
    if not args.no_promote:
        result["promotion"] = promote(model_dir, version, settings.gate(), data=data, progress=_progress)
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
    data = load_training_data()
    started = time.monotonic()
    reports = evaluate(
        data.applications,
        data.bad,
        names,
        _costs(settings),
        settings.review_capacity,
        repeats=args.repeats,
        seed=args.seed,
        progress=_progress,
        protected=data.protected,
    )
    table = markdown_table(reports)
    fairness = "\n\n".join(
        f"Fairness of `{name}` (3-way policy, out-of-fold, mean of the repeats):\n\n"
        f"{fairness_table(report.summary()['fairness'])}"
        for name, report in reports.items()
        if CANDIDATES[name].make is not None
    )
    command = f"onboarding-model evaluate --candidates {','.join(names)} --repeats {args.repeats} --seed {args.seed}"
    print(json.dumps({n: r.summary() for n, r in reports.items()}, indent=2))
    seconds = time.monotonic() - started
    print(f"\n{table}\n\n{fairness}\n\n{args.repeats} x 10-fold stratified CV in {seconds:.0f} s: `{command}`")
    if args.markdown:
        args.markdown.write_text(f"{table}\n\n{fairness}\n\nProduced by `{command}` in {seconds:.0f} s.\n")
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
    data = load_training_data()
    reasons = promote(settings.model_dir, args.version, settings.gate(), args.force, data, _progress)
    print(json.dumps({"current": args.version, "gate": reasons}))
    return 0


def cmd_rollback(settings: RiskSettings, args: argparse.Namespace) -> int:
    print(json.dumps({"current": rollback(settings.model_dir)}))
    return 0


def cmd_explain(settings: RiskSettings, args: argparse.Namespace) -> int:
    if args.file:
        loaded = json.loads(args.file.read_text())
        application = loaded.get("application", loaded)
    else:
        from risk.samples import sample_application

        application = sample_application(random.Random())
    model = load_model(settings.model_dir, current_version(settings.model_dir))
    p = probability_bad(model.pipeline, application)
    print(
        json.dumps(
            {
                "model_version": model.version,
                "score": round(p, 4),
                "decision": model.policy.decide(p).value,
                "reason_codes": [r.to_dict() for r in reason_codes(model.pipeline, application)],
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

    model = load_model(settings.model_dir, current_version(settings.model_dir))
    rng = random.Random(0)
    applications = [sample_application(rng) for _ in range(200)]
    for application in applications[:20]:  # warm up
        probability_bad(model.pipeline, application)
    score_only, with_reasons = [], []
    for i in range(args.n):
        application = applications[i % len(applications)]
        t0 = time.perf_counter()
        probability_bad(model.pipeline, application)
        t1 = time.perf_counter()
        reason_codes(model.pipeline, application)
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
}


def train_main(argv: list[str] | None = None) -> int:
    """`onboarding-train [args]`: the same as `onboarding-model train [args]`."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
