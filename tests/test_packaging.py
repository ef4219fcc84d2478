"""The files a user of the repository needs beside the code: a licence, and a citation that names this version."""

import re

import yaml
from conftest import ROOT


def test_citation_names_the_package_version_and_licence() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert citation["version"] == version and citation["cff-version"] == "1.2.0"
    assert citation["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert citation["authors"] == [{"name": "seqlab developers"}]
