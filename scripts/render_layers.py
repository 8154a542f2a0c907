"""Draw docs/img/layers.svg from the layers contract in pyproject.toml ([tool.importlinter]).

    .venv/bin/python scripts/render_layers.py          # rewrite the picture
    .venv/bin/python scripts/render_layers.py --check  # exit 1 if the picture is out of date

The contract is the source of truth (CI enforces it with `lint-imports`); the picture is drawn
from it, and tests/test_architecture.py fails when the two disagree.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img" / "layers.svg"

# One line per package: what it is for (shown in the picture).
ROLES = {
    "benchmarks": "latency, archive and fault benchmarks",
    "testkit": "real-component fixtures for tests and benchmarks",
    "stack": "the local runner (scripts/demo)",
    "ops": "operator tools: erase, access, Redis ACLs",
    "sla": "SLA metrics, page, overdue re-drive",
    "listener": "signups -> one Airflow run each",
    "archiver": "weekly metadata archive",
    "dags": "DAG files: wiring only (airflow_adapter)",
    "airflow_adapter": "all that faces Airflow, one version check",
    "risk": "model, policy, steps, publishing; no airflow",
    "onboarding": "contracts, keys, settings, errors, REST client",
}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 250, 58, 20, 34, 20


def layers() -> list[list[str]]:
    """The layers, top first, each a list of packages; the DAG files sit with the jobs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    rows = [[name.strip() for name in line.replace(":", "|").split("|")] for line in contract["layers"]]
    for row in rows:
        if "listener" in row:
            row.append("dags")
    return rows


def render(rows: list[list[str]]) -> str:
    widest = max(len(row) for row in rows)
    width = MARGIN * 2 + widest * BOX_W + (widest - 1) * GAP_X
    height = MARGIN * 2 + 24 + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="13" fill="#333">Each layer imports only from the '
        "layers below it (arrows); packages side by side do not import each other.</text>",
    ]
    for i, row in enumerate(rows):
        y = MARGIN + 24 + i * (BOX_H + GAP_Y)
        row_w = len(row) * BOX_W + (len(row) - 1) * GAP_X
        x0 = (width - row_w) / 2
        for j, name in enumerate(row):
            x = x0 + j * (BOX_W + GAP_X)
            fill = "#e8f1fb" if name != "onboarding" else "#fdf3e1"
            out.append(
                f'<rect x="{x:.0f}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="#4a6fa5"/>'
            )
            out.append(
                f'<text x="{x + BOX_W / 2:.0f}" y="{y + 24}" font-size="15" font-weight="bold" '
                f'text-anchor="middle" fill="#1d3557">{escape(name)}/</text>'
            )
            out.append(
                f'<text x="{x + BOX_W / 2:.0f}" y="{y + 44}" font-size="11" text-anchor="middle" '
                f'fill="#333">{escape(ROLES.get(name, ""))}</text>'
            )
        if i < len(rows) - 1:
            cx = width / 2
            out.append(
                f'<line x1="{cx:.0f}" y1="{y + BOX_H + 2}" x2="{cx:.0f}" y2="{y + BOX_H + GAP_Y - 3}" '
                'stroke="#555" stroke-width="2" marker-end="url(#arrow)"/>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/img/layers.svg is out of date")
    args = parser.parse_args(argv)
    svg = render(layers())
    if args.check:
        if not OUT.is_file() or OUT.read_text() != svg:
            print(
                f"{OUT.relative_to(ROOT)} is out of date: run .venv/bin/python scripts/render_layers.py",
                file=sys.stderr,
            )
            return 1
        print(f"{OUT.relative_to(ROOT)} matches pyproject.toml's layers")
        return 0
    OUT.write_text(svg)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
