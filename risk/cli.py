"""`onboarding-train`: train the baseline risk model and make it the current version."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from onboarding.errors import OnboardingError
from risk.artifacts import current_version, save_model
from risk.errors import RiskError
from risk.model import evaluate, fit, load_training_data
from risk.policy import CostMatrix, Policy
from risk.settings import RiskSettings

logger = logging.getLogger("risk.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onboarding-train", description=__doc__)
    parser.add_argument("--if-missing", action="store_true", help="do nothing if a current model exists")
    parser.add_argument("--no-promote", action="store_true", help="save the version without making it current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = RiskSettings.from_env()
        if args.if_missing:
            try:
                version = current_version(settings.model_dir)
            except RiskError:
                pass
            else:
                print(f"current model {version} in {settings.model_dir}; nothing to do")
                return 0
        costs = CostMatrix(review_cost=settings.review_cost)
        policy = Policy.from_costs(costs)
        print("[1/3] loading training data", flush=True)
        data = load_training_data()
        print(f"[2/3] 10-fold cross-validation on {len(data.bad)} applicants", flush=True)
        metrics = evaluate(data, costs, policy)
        print(f"[3/3] fitting on all data and saving to {settings.model_dir}", flush=True)
        pipeline = fit(data)
        settings.model_dir.mkdir(parents=True, exist_ok=True)
        version = save_model(
            settings.model_dir, pipeline, policy, data.sha256, metrics, make_current=not args.no_promote
        )
    except (OnboardingError, RiskError) as err:
        print(f"onboarding-train: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"version": version, "metrics": metrics, "policy": policy.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
