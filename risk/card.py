"""A model card per version: markdown plus ROC, calibration and score-distribution plots.

Everything comes from the version's metadata (its cross-validated out-of-fold scores), so
the card describes how the model did on applicants it had not seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from risk.evaluation import calibration_curve
from risk.fairness import FOUR_FIFTHS
from risk.fairness import markdown_table as fairness_table


def write_card(folder: Path, meta: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    scores = np.array(meta.get("out_of_fold_scores") or [])
    labels = np.array(meta.get("labels") or [], dtype=bool)
    plots = []
    if len(scores) and len(scores) == len(labels):
        fpr, tpr, _ = roc_curve(labels, scores)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set(xlabel="false positive rate (good flagged)", ylabel="true positive rate (bad caught)", title="ROC")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(folder / "roc.png", dpi=100)
        plt.close(fig)

        curve = calibration_curve(scores, labels.astype(float))
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot([p for p, _ in curve], [o for _, o in curve], marker="o", label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
        ax.set(xlabel="mean predicted P(bad)", ylabel="observed bad rate", title="Calibration (deciles)")
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(folder / "calibration.png", dpi=100)
        plt.close(fig)

        policy = meta.get("policy", {})
        fig, ax = plt.subplots(figsize=(6, 3.5))
        bins = np.linspace(0, 1, 41).tolist()  # matplotlib types `bins` as a sequence of floats
        ax.hist(scores[~labels], bins=bins, alpha=0.6, label="good")
        ax.hist(scores[labels], bins=bins, alpha=0.6, label="bad")
        for key, style in (("approve_max", ":"), ("decline_min", "--")):
            if key in policy:
                ax.axvline(policy[key], color="black", linestyle=style, label=key)
        ax.set(xlabel="P(bad), out of fold", ylabel="applicants", title="Score distribution and policy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "scores.png", dpi=100)
        plt.close(fig)
        plots = ["roc.png", "calibration.png", "scores.png"]

    metrics = meta.get("metrics", {})

    def stat(key: str) -> str:
        value = metrics.get(key)
        if isinstance(value, dict):
            return f"{value['mean']:.3f} ± {value['std']:.3f}"
        return "n/a"

    cv = meta.get("cv", {})
    costs = meta.get("costs", {})
    lines = [
        f"# Model card: {meta['version']}",
        "",
        f"- Kind: {meta.get('kind', 'logistic')} (scikit-learn {meta['libraries']['scikit-learn']}, "
        f"Python {meta['libraries']['python']})",
        f"- Trained: {meta.get('created_at')} on the German credit data "
        f"(sha256 {meta['training_data_sha256'][:16]}...)",
        f"- Evaluation: {cv.get('repeats', '?')} x {cv.get('folds', '?')}-fold stratified CV, "
        f"seed {cv.get('seed', '?')}",
        "",
        "| metric | mean ± std across repeats |",
        "|---|---|",
        f"| ROC AUC | {stat('auc')} |",
        f"| Brier score | {stat('brier')} |",
        f"| cost per applicant, Bayes rule (decline if P(bad) > 1/6) | {stat('cost_bayes')} |",
        f"| cost per applicant, this policy | {stat('cost_policy')} |",
        f"| review rate | {stat('review_rate')} |",
        "",
        f"Policy: approve if P(bad) ≤ {meta['policy']['approve_max']:.3f}, decline if P(bad) ≥ "
        f"{meta['policy']['decline_min']:.3f}, review in between. Costs: bad approved "
        f"{costs.get('bad_approved', 5)}, good declined {costs.get('good_declined', 1)}, review "
        f"{costs.get('review', '?')}, review capacity {costs.get('review_capacity', '?')}.",
        "",
        f"Hyper-parameters (chosen by inner CV on all applicants): {meta.get('hyper_parameters') or 'n/a'}",
        "",
        "Not used as features: sex and marital status, foreign-worker status (protected attributes)"
        + (", age." if str(meta.get("kind", "")).startswith(("boosted", "blend")) else "."),
        "",
        *_fairness_lines(meta.get("fairness") or {}),
        *[f"![{p}]({p})" for p in plots],
        "",
    ]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _fairness_lines(fairness: dict[str, Any]) -> list[str]:
    if not fairness:
        return ["No fairness report (a version trained before fairness was measured).", ""]
    flagged = [a for a, entry in fairness.items() if entry["disparate_impact"] < FOUR_FIFTHS]
    return [
        "## Fairness (out-of-fold decisions of the CV, mean of the repeats)",
        "",
        fairness_table(fairness),
        "",
        "Disparate impact: lowest group approval rate / highest (four-fifths rule: at least "
        f"{FOUR_FIFTHS}); equal-opportunity difference: spread of the rate of good applicants approved. "
        + (f"Below four-fifths: {', '.join(flagged)}." if flagged else "Every attribute meets the four-fifths rule."),
        "",
    ]
