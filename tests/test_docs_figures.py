"""Every measured figure in the docs names what produced it, and every citation resolves.

A reader who sees "p99 0.40 s" must be able to rerun it. So every *measurement* in
docs/*.md and README.md (a number with a unit of time, rate, size, CPU, a ratio, a
percentage next to a word such as p99 or busy, an AUC or a cost) needs a *source* in its
paragraph or table, or in the section around it:

- a file under benchmarks/, tests/ or risk/ **and** a command in backticks or a code
  block (``.venv/bin/python benchmarks/latency.py ...``, ``python -m pytest ...``), or
- a link to a section of another page (``benchmarks.md#the-sqlite-default``, or
  ``#capacity-model`` on the same page), or to a record under docs/benchmarks/, that itself
  holds such a source.

Settings and limits are not measurements: a figure next to a word such as default,
timeout, limit, TTL, every, after or at most (see SETTING_BEFORE / SETTING_AFTER), or a
target written with ≤ / ≥, needs no source. What the words cannot tell apart is in ALLOWED,
each with its reason.

The second check: every benchmarks/ or tests/ file, ``.venv/bin/<script>`` and
``python -m <module>`` the docs cite exists, so a citation cannot rot.

Generated records (docs/benchmarks/**) are stamped with their command and not scanned.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def doc_paths() -> list[Path]:
    return [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]


# --- what a measurement is -----------------------------------------------------------

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_RANGE = rf"{_NUM}(?:\s?[-\u2013]\s?{_NUM})?"  # 0.4-0.6 or 13\u201314
_RATE_NOUN = r"(?:decisions?|signups?|runs?|events?|requests?|transactions?|tasks?|task instances|calls?|rows?)"
_UNIT = (
    r"(?:"
    r"ms|µs|s|sec|seconds?"  # time
    rf"|{_RATE_NOUN}?\s?/\s?s|{_RATE_NOUN} (?:per|a) second"  # rate
    r"|[kKMG]i?B"  # size
    r"|CPU[- ]?(?:s|ms|seconds?)"  # CPU time
    r")(?![\w/])"
)
FIGURE = re.compile(rf"(?<![\w.#/-])(?:~\s?)?{_RANGE}(?:\s?{_UNIT}|x(?!\w))")
PERCENT = re.compile(rf"(?<![\w.#/-]){_RANGE}\s?%")
PERCENT_CUE = re.compile(
    r"\b(?:measured|p50|p95|p99|median|latency|busy|CPU|throughput|of (?:its|the) (?:busy )?time|faster|slower)\b",
    re.IGNORECASE,
)
SCORE = re.compile(
    r"\b(?:AUC|ROC AUC|cost|Brier|log loss|accuracy|precision|recall)\b[^.;|\n]{0,25}?\b(0?\.\d+|\d+\.\d+)"
)

# A figure is a setting, a limit or a target when a noun such as default or timeout is in
# its clause before it, a preposition such as after or every comes right before it, or a
# noun follows it ("a 5 s timeout", "64 KiB limit").
SETTING_BEFORE = re.compile(
    r"\b(?:default(?:s|ed)?|timeout|time-out|limit(?:s|ed)?|retention|retains?|TTL|budget|threshold|target|SLO"
    r"|setting|set to|keeps?|requests?|cap(?:ped)?|interval|sleeps?|heartbeat|backoff|expires?|poll(?:s|ed|ing)?)\b"
    r"|(?:\b(?:after|every|within|up to|at most|no more than|for|max(?:imum)?|duration|load of|at a sustained)"
    r"(?:\s+(?:about|the|each|next))?|[=≤≥<>])\s*$",
    re.IGNORECASE,
)
SETTING_AFTER = re.compile(
    r"^\s*(?:limit|timeout|time-out|TTL|retention|cap|budget|interval|window|busy timeout|heartbeat|by default"
    r"|default|or (?:more|less)|at most|max|of the (?:\w+ )?budget)\b",
    re.IGNORECASE,
)
SETTING_COLUMN = re.compile(r"\b(?:default|limit|timeout|setting|value|TTL|retention)\b", re.IGNORECASE)

# Figures the words cannot tell apart: (page, text the figure's block contains, why it is not a measurement).
ALLOWED: tuple[tuple[str, str, str], ...] = (
    ("sla.md", "**99 % of signups decided within 10 s**", "the SLO itself: a target, not a measurement"),
)


# --- what a source is ----------------------------------------------------------------

SOURCE_FILE = re.compile(r"(?<![\w/.-])(?:\.\./)?(?:benchmarks|tests|risk)/[\w/.-]*\w\.(?:py|sh)\b")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# a command line: the program may follow a wrapper or variables (`flock ... .venv/bin/python ...`)
COMMAND = re.compile(r"(?:^|\s)(?:\.venv/bin/[\w.-]+|python3?\s+\S|pytest\b|scripts/\w+)")
# a command that names its file: `python -m benchmarks.latency`, or one of the project's own
# console scripts (pyproject's [project.scripts] maps it to its module)
MODULE_COMMAND = re.compile(r"\bpython3?\s+-m\s+(?:benchmarks|tests|risk)\.\w")
LINK = re.compile(r"\]\(([^)\s]*)\)")


def has_command(text: str) -> bool:
    spans = INLINE_CODE.findall(text)
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.DOTALL):
        spans.extend(block.splitlines())
    return any(COMMAND.search(span.strip()) for span in spans)


def names_file_and_command(text: str) -> bool:
    if MODULE_COMMAND.search(text):
        return True
    if any(re.search(rf"(?:^|[\s`/]){re.escape(name)}\b", text) for name in console_scripts()) and has_command(text):
        return True
    return bool(SOURCE_FILE.search(text)) and has_command(text)


# --- reading a page ------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # "text", "table" or "code"
    text: str
    line: int


@dataclass
class Section:
    title: str
    anchor: str
    level: int
    parent: Section | None = None
    blocks: list[Block] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    title = re.sub(r"[`*_]", "", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def sections(markdown: str) -> list[Section]:
    out = [Section("", "", 0)]
    lines: list[str] = []
    start = 0
    fence = False

    def flush() -> None:
        nonlocal lines
        if lines:
            text = "\n".join(lines)
            kind = "code" if text.startswith("```") else "table" if all(ln.startswith("|") for ln in lines) else "text"
            out[-1].blocks.append(Block(kind, text, start))
        lines = []

    for number, line in enumerate(markdown.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if not fence:
                flush()
                start = number
            fence = not fence
            lines.append(line)
            if not fence:
                flush()
            continue
        if fence:
            lines.append(line)
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            flush()
            level = len(heading[1])
            parent = next(s for s in reversed(out) if s.level < level)
            out.append(Section(heading[2], slug(heading[2]), level, parent))
        elif not line.strip():
            flush()
        else:
            if not lines:
                start = number
            lines.append(line)
    flush()
    return out


def prose(text: str) -> str:
    """The block without code spans and link targets: what a reader reads as figures.

    A code span naming an environment variable or a config key reads as the word "setting",
    so that "`LISTENER_MAX_PAYLOAD_BYTES`, 64 KiB" is known for a setting."""
    text = re.sub(r"`(?:[A-Z][A-Z0-9_]{2,}|[a-z]+(?:_[a-z]+)+)`", " setting ", text)
    text = INLINE_CODE.sub(" ", text)
    text = LINK.sub("]", text)
    return re.sub(r"<!--.*?-->", " ", text, flags=re.DOTALL)


def clause_before(text: str, end: int) -> str:
    head = text[max(0, end - 45) : end]
    cut = max(head.rfind(sep) for sep in (". ", "; ", ": ", "|", "\n\n"))
    return head[cut + 1 :] if cut >= 0 else head


def measurements(block: Block) -> list[str]:
    """The measured figures of a block (settings, limits and targets left out)."""
    if block.kind == "code":
        return []
    if block.kind == "table":
        # each cell read after its column's header: a "Default" column holds settings
        rows = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block.text.splitlines()]
        header = rows[0]
        return [
            figure
            for row in rows[2:]
            for name, cell in zip(header, row, strict=False)
            if not SETTING_COLUMN.search(name)
            for figure in measurements(Block("text", cell, block.line))
        ]
    text = prose(block.text)
    found = []
    for match in [*FIGURE.finditer(text), *SCORE.finditer(text)]:
        if SETTING_BEFORE.search(clause_before(text, match.start())):
            continue
        if SETTING_AFTER.search(text[match.end() : match.end() + 25]):
            continue
        found.append(match.group(0).strip())
    for match in PERCENT.finditer(text):
        sentence = text[max(0, match.start() - 120) : match.end() + 60]
        if not PERCENT_CUE.search(sentence) or SETTING_BEFORE.search(clause_before(text, match.start())):
            continue
        if SETTING_AFTER.search(text[match.end() : match.end() + 30]):
            continue
        found.append(match.group(0))
    return found


# --- following a citation ------------------------------------------------------------


@cache
def page_sections(path: Path) -> dict[str, Section]:
    return {s.anchor: s for s in sections(path.read_text())}


def cited_source(page: Path, text: str, pages: dict[Path, str] | None = None) -> bool:
    """The text names a file and a command, or links to a section or record that does."""
    if names_file_and_command(text):
        return True
    for target in LINK.findall(text):
        if "://" in target:
            continue
        name, _, anchor = target.partition("#")
        path = (page.parent / name).resolve() if name else page
        if pages is not None and path in pages:
            doc = {s.anchor: s for s in sections(pages[path])}
        elif path.suffix == ".md" and path.is_file():
            doc = page_sections(path)
        else:
            continue
        if anchor:
            section = doc.get(anchor)
            if section is not None and any(names_file_and_command(s.text) for s in lineage(section)):
                return True
        elif (REPO / "docs" / "benchmarks") in path.parents and names_file_and_command(path.read_text()):
            return True  # a generated record, stamped with its command
    return False


def lineage(section: Section) -> list[Section]:
    """The section and the sections it is part of: a subsection shares its parent's source."""
    out = []
    current: Section | None = section
    while current is not None:
        out.append(current)
        current = current.parent
    return out


def unsourced(page: Path, markdown: str, pages: dict[Path, str] | None = None) -> list[str]:
    """`page:line: figure` for every measurement that names no source."""
    missing = []
    name = page.name
    allowed = [(snippet, why) for doc, snippet, why in ALLOWED if doc == name]
    for section in sections(markdown):
        section_sourced: bool | None = None
        for block in section.blocks:
            figures = measurements(block)
            if not figures or any(snippet in block.text for snippet, _ in allowed):
                continue
            if cited_source(page, block.text, pages):
                continue
            if section_sourced is None:
                section_sourced = any(cited_source(page, s.text, pages) for s in lineage(section))
            if not section_sourced:
                missing.append(f"{name}:{block.line}: {', '.join(figures)}")
    return missing


def test_every_measured_figure_in_the_docs_names_its_file_and_command() -> None:
    missing = [m for path in doc_paths() for m in unsourced(path, path.read_text())]
    assert not missing, "measured figures without a source (a file and a command):\n" + "\n".join(missing)


# --- the checker on small pages ------------------------------------------------------


def check(markdown: str, **others: str) -> list[str]:
    page = REPO / "docs" / "synthetic.md"
    pages = {REPO / "docs" / name: text for name, text in others.items()}
    return unsourced(page, markdown, pages)


def test_checker_passes_a_figure_that_names_its_file_and_command() -> None:
    assert check("p99 0.40 s at 2/s (`benchmarks/latency.py`: `.venv/bin/python benchmarks/latency.py`).\n") == []
    assert check("p99 0.40 s at 2/s.\n\n```bash\n.venv/bin/python benchmarks/latency.py\n```\n") == []


def test_checker_fails_an_unsourced_measurement() -> None:
    assert check("A decision takes about 0.4 s at 2 signups/s.\n")
    assert check("The burst was decided at 6.3 decisions/s ([benchmarks.md](benchmarks.md)).\n")
    assert check("| variant | p99 |\n|---|---|\n| tuned | 0.40 s |\n")
    assert check("The listener uses 47 MB RSS.\n")
    assert check("The scheduler was 28 % busy at p99.\n")
    assert check("The model's AUC is 0.78.\n")
    # a file without a command, or a command without a file, is not a source
    assert check("p99 0.40 s (benchmarks/latency.py).\n")
    assert check("p99 0.40 s (`scripts/test`).\n")


def test_checker_follows_a_link_to_a_section_that_names_its_source() -> None:
    record = "# Benchmarks\n\n## The SQLite default\n\n```bash\n.venv/bin/python benchmarks/latency.py\n```\n"
    unsourced_record = (
        "# Benchmarks\n\n## The SQLite default\n\nIt was fast.\n\n## Other\n\n`python benchmarks/latency.py`\n"
    )
    figure = "p99 0.40 s at 2/s ([benchmarks.md](benchmarks.md#the-sqlite-default)).\n"
    assert check(figure, **{"benchmarks.md": record}) == []
    assert check(figure, **{"benchmarks.md": unsourced_record})
    assert check("p99 0.40 s at 2/s ([benchmarks.md](benchmarks.md#no-such-section)).\n", **{"benchmarks.md": record})


def test_checker_passes_settings_limits_and_targets() -> None:
    assert check("Dead letters keep at most 64 KiB per field.\n") == []
    assert check("A 5 s timeout; retention 7 days; the TTL is 30 s.\n") == []
    assert check("A crashed service is restarted after 1 s, then up to 30 s between attempts.\n") == []
    assert check("The scheduler idle sleep 0.05 s (default 1 s).\n") == []
    assert check("Target: p99 ≤ 2.5 s at a sustained 2 signups/s.\n") == []
    assert check("```bash\nbenchmarks/latency.py --duration 60  # about 4 min, 2/s\n```\n") == []


# --- citations that cannot rot -------------------------------------------------------

CITED_FILE = re.compile(r"(?<![\w/.-])(?:\.\./)?((?:benchmarks|tests)/[\w/.-]*\w\.py)(?:::(\w+))?")
VENV_SCRIPT = re.compile(r"\.venv/bin/([\w.-]+)")
PYTHON_M = re.compile(r"\bpython3?\s+-m\s+([\w.]+)")


@cache
def console_scripts() -> frozenset[str]:
    return frozenset(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def module_exists(module: str) -> bool:
    parts = module.split(".")
    local = REPO.joinpath(*parts)
    if local.with_suffix(".py").is_file() or (local / "__init__.py").is_file() or (local / "__main__.py").is_file():
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def broken_citations(markdown: str) -> list[str]:
    broken = []
    scripts = console_scripts()
    venv_bin = Path(sys.executable).parent
    for path, test in CITED_FILE.findall(markdown):
        target = REPO / path
        if not target.is_file():
            broken.append(path)
        elif test and not re.search(rf"^\s*(?:async )?def {test}\b|^class {test}\b", target.read_text(), re.MULTILINE):
            broken.append(f"{path}::{test}")
    for script in VENV_SCRIPT.findall(markdown):
        if script not in scripts and not (venv_bin / script).exists():
            broken.append(f".venv/bin/{script}")
    broken += [f"python -m {m}" for m in PYTHON_M.findall(markdown) if not module_exists(m)]
    return broken


def test_every_cited_file_script_and_module_exists() -> None:
    broken = [f"{p.relative_to(REPO)}: {b}" for p in doc_paths() for b in broken_citations(p.read_text())]
    assert not broken, "the docs cite what does not exist:\n" + "\n".join(broken)


def test_citation_checker_catches_a_missing_file_script_and_module() -> None:
    assert broken_citations("`.venv/bin/python benchmarks/latency.py`, `python -m pytest tests/test_dags.py`") == []
    assert broken_citations("tests/test_no_such_file.py") == ["tests/test_no_such_file.py"]
    assert broken_citations("tests/test_dags.py::test_no_such_test") == ["tests/test_dags.py::test_no_such_test"]
    assert broken_citations("`.venv/bin/onboarding-no-such-cli`") == [".venv/bin/onboarding-no-such-cli"]
    assert broken_citations("`python -m benchmarks.no_such_module`") == ["python -m benchmarks.no_such_module"]
