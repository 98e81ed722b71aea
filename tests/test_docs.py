"""The README and docs/ stay usable: the README short, every relative link and anchor resolving, every
``metasr`` command the README shows accepted by today's command line, and the README's test line what CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 260  # a page for users; measurements and design notes live in docs/

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`[^`]*`")


def _prose_and_code(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The lines outside fenced code blocks, and each fenced block as (info string, lines)."""
    prose: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            if block is None:
                block = []
                blocks.append((line.strip().strip("`~").strip(), block))
            else:
                block = None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    return prose, blocks


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    prose, _ = _prose_and_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    prose, _ = _prose_and_code(path.read_text(encoding="utf-8"))
    return [m.group(1) for line in prose for m in _LINK.finditer(_CODE_SPAN.sub("", line))]


def test_readme_stays_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_readme_has_no_placeholders():
    text = README.read_text(encoding="utf-8")
    for word in ("TODO", "TBD", "FIXME", "XXX"):
        assert word not in text, word


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    bad = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.is_relative_to(ROOT) or not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _links(README)}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def _readme_commands() -> list[list[str]]:
    """Each ``metasr ...`` command in the README's shell blocks, continuation lines joined, comments dropped."""
    _, blocks = _prose_and_code(README.read_text(encoding="utf-8"))
    commands = []
    for info, lines in blocks:
        if info not in ("bash", "sh", "shell"):
            continue
        for line in _joined(lines):
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "metasr":
                    commands.append(words[1:])
    return commands


def _joined(lines: list[str]) -> list[str]:
    out, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            out.append(current + line)
            current = ""
    return out


def test_readme_commands_parse():
    from metasr.cli import build_parser

    commands = _readme_commands()
    assert len(commands) >= 9  # a tour: every command group shows at least one example
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:  # argparse's usage error (its one line is on stderr)
            pytest.fail(f"the README's `metasr {shlex.join(argv)}` does not parse (exit {e.code})")


def test_readme_test_line_is_what_ci_runs():
    steps = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line for line in steps if line and not line.startswith(("#", "set ", "cd "))]
    ci_line = " && ".join(ci).replace("pip install -q ", "pip install ")
    _, blocks = _prose_and_code(README.read_text(encoding="utf-8"))
    assert any(ci_line in lines for _, lines in blocks), f"README has no block line {ci_line!r}"
