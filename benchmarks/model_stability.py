"""Are the service model's reasons stable across retrains? Retrain on bootstrap resamples.

    python -m benchmarks.model_stability [--bootstraps 10]

Fits the service's training procedure (`risk.model.fit`, hyper-parameter search included) on
all applicants, then on `--bootstraps` resamples of them (each with its own seed), and
compares the reasons each retrained model gives the applicants the policy does not simply
approve (P(bad) above the approve threshold of the cost matrix, 0.14) with the reference
model's: the share of the reference's top-4 reason codes that the retrained model also
gives, and the share of applicants whose first reason is the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from risk.boosted import BoostedTrees  # noqa: E402
from risk.features import application_to_model_row  # noqa: E402
from risk.model import TrainingData, fit, load_training_data, probability_bad, reason_codes  # noqa: E402

APPROVE_BELOW = 0.14  # review cost 0.7 / bad-approved cost 5: below it, no reasons are given


def bootstrap_models(data: TrainingData, count: int, progress: Any = None) -> list[Any]:
    """The service's model on all applicants, then on `count` bootstrap resamples."""
    rows = [application_to_model_row(a) for a in data.applications]
    labels = np.array(data.bad)
    rng = np.random.default_rng(0)
    models = [fit(data)]
    for seed in range(1, count + 1):
        if progress:
            progress(f"bootstrap {seed}/{count}")
        index = rng.integers(0, len(labels), len(labels))
        models.append(BoostedTrees(seed=seed, explain=True).fit([rows[i] for i in index], labels[index]))
    return models


def reason_agreement(models: list[Any], applications: list[dict[str, Any]]) -> tuple[float, float]:
    """(mean share of the reference's top-4 reasons that a retrained model also gives, share
    of applicants with the same first reason), over every retrained model and applicant."""
    reference = [reason_codes(models[0], a) for a in applications]
    overlaps, firsts = [], []
    for model in models[1:]:
        for application, ref in zip(applications, reference, strict=True):
            other = reason_codes(model, application)
            if not ref or not other:
                continue
            overlaps.append(len({r.code for r in ref} & {r.code for r in other}) / len(ref))
            firsts.append(ref[0].code == other[0].code)
    return float(np.mean(overlaps)), float(np.mean(firsts))


def explained_applicants(model: Any, data: TrainingData) -> list[dict[str, Any]]:
    return [a for a in data.applications if probability_bad(model, a) > APPROVE_BELOW]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstraps", type=int, default=10)
    args = parser.parse_args(argv)
    started = time.monotonic()
    data = load_training_data()
    models = bootstrap_models(data, args.bootstraps, lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
    applicants = explained_applicants(models[0], data)
    overlap, first = reason_agreement(models, applicants)
    print(
        json.dumps(
            {
                "bootstraps": args.bootstraps,
                "applicants": len(applicants),
                "top4_overlap": round(overlap, 3),
                "same_first_reason": round(first, 3),
                "seconds": round(time.monotonic() - started),
                "command": f"python -m benchmarks.model_stability --bootstraps {args.bootstraps}",
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
