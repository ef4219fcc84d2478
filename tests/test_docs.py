"""The README and docs/ as a reader follows them: every relative link leads to a file that exists, and the README
stays a ten-minute read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target), images included


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold commands, not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    dead = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not dead, f"{page.relative_to(ROOT)} links to files that do not exist: {dead}"


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300, "the long material belongs in docs/"


def test_the_readme_layout_names_every_module_and_config_group() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :].split("\n## ")[0]
    modules = {p.name for p in (ROOT / "src" / "seqlab").rglob("*.py") if p.name != "__init__.py"}
    groups = {f"{p.name}/" for p in (ROOT / "conf").iterdir() if p.is_dir()}
    # named by their kind in the layout: "one file per model", "callbacks/ (gradient profile, ...)"
    by_kind = {p.stem for p in (ROOT / "src" / "seqlab" / "training" / "callbacks").glob("*.py")}
    by_kind |= {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")}
    missing = sorted(m for m in modules | groups if m not in layout and m.removesuffix(".py") not in by_kind)
    assert not missing, f"README's Layout leaves out {missing}"
