"""The two images' sizes with every dependency in each (before the split by role) and with
one extra each (after): docs/images.md, "Sizes".

    .venv/bin/python benchmarks/image_sizes.py [--rev HEAD] [--before-deps a9fdb46]

Builds both images twice with scripts/images.py (podman, on this machine), from the
committed tree of `--rev` (git archive, so nobody's uncommitted edits are in it):

  before  that tree with the pyproject.toml of `--before-deps`, whose dependencies were one
          list: both images installed everything (the extras the Dockerfiles name do not
          exist there, so pip installs the package with all of its dependencies);
  after   that tree as committed: the service image `[service]`, the Airflow image `[airflow]`.

Sources, Dockerfiles, lock and base images are the same in both, so the difference is the
dependencies alone. Images built before from the same inputs are reused (content-hash tags).
Sizes are podman's uncompressed image sizes (`podman image inspect --format {{.Size}}`),
base layers included; the local bases' own sizes are printed too. Progress goes to stderr,
the table and the command to stdout. Needs root and the container tools
(scripts/setup.sh ensure_container_tools); the environment variables are scripts/images.py's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEFORE_DEPS = "a9fdb46"  # the last commit with one dependency list (issue 30 split it)


def export(rev: str, target: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)


def build(context: Path, label: str) -> dict[str, Any]:
    print(f"== {label}: scripts/images.py build --context <{label}>", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "images.py"),
                "build",
                "--context",
                str(context),
                "--json",
                report.name,
            ],
            stdout=sys.stderr,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"building the {label} images failed")
        found: dict[str, Any] = json.loads(Path(report.name).read_text())
    return {image["name"]: image for image in found["images"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rev", default="HEAD", help="the committed tree to build (default HEAD)")
    parser.add_argument(
        "--before-deps", default=BEFORE_DEPS, help=f"pyproject.toml of this rev (default {BEFORE_DEPS})"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as before_dir, tempfile.TemporaryDirectory() as after_dir:
        before, after = Path(before_dir), Path(after_dir)
        export(args.rev, before)
        export(args.rev, after)
        pyproject = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{args.before_deps}:pyproject.toml"], capture_output=True, check=True
        )
        (before / "pyproject.toml").write_bytes(pyproject.stdout)
        sizes = {"before": build(before, "before"), "after": build(after, "after")}
    command = shlex.join(
        [".venv/bin/python", "benchmarks/image_sizes.py", "--rev", args.rev, "--before-deps", args.before_deps]
    )
    print(f"# {command}")
    print("| Image | before: every dependency | after: its extra | change |")
    print("|---|---|---|---|")
    for name, extra in (("onboarding", "service"), ("onboarding-airflow", "airflow")):
        old, new = sizes["before"][name]["size_bytes"], sizes["after"][name]["size_bytes"]
        print(f"| {name} (`[{extra}]`) | {old / 1e6:.0f} MB | {new / 1e6:.0f} MB | {(new - old) / 1e6:+.0f} MB |")
    for base in ("python-base", "airflow-base"):
        print(f"| local base {base} | {sizes['after'][base]['size_bytes'] / 1e6:.0f} MB | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
