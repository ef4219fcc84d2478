"""No private attribute of Lightning, Optuna, torch or another library is used in src/seqlab without a
`# private: <why>` comment on its line, saying why no public API does the job.

A `._name` access counts as foreign unless seqlab defines that name itself (a function, a class, a module
global, or a `self._name` attribute), it is on `self`/`cls`, a Hydra key (`_target_`), or an attribute of a
standard-library module (`os._Environ`).
"""

from __future__ import annotations

import ast
import sys

from seqlab.paths import ROOT

SRC = ROOT / "src" / "seqlab"


def is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def own_private_names(sources: list[str]) -> set[str]:
    """The private names seqlab defines: accessing them is seqlab's business."""
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and is_self(node.value):
                names.add(node.attr)
    return {n for n in names if n.startswith("_")}


def uncommented_private_accesses(source: str, own: set[str]) -> list[tuple[int, str]]:
    """(line number, line) of each `x._name` on a foreign object whose line has no `# private:` comment."""
    tree = ast.parse(source)
    stdlib = set()  # local names bound to standard-library modules (import os, import os.path as p)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in sys.stdlib_module_names:
                    stdlib.add(alias.asname or alias.name.split(".")[0])
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name, base = node.attr, node.value.id if isinstance(node.value, ast.Name) else None
        if not name.startswith("_") or name.startswith("__") or name.endswith("_"):  # public, dunder, Hydra key
            continue
        if is_self(node.value) or base in stdlib or name in own:
            continue
        line = lines[node.lineno - 1]
        comment = line.partition("# private:")[2].strip()
        if len(comment.split()) < 2:  # no comment, or one that says nothing
            found.append((node.lineno, line.strip()))
    return found


def test_every_private_library_attribute_says_why() -> None:
    paths = sorted(SRC.rglob("*.py"))
    assert len(paths) > 20  # the package itself, not an empty glob
    sources = {path: path.read_text() for path in paths}
    own = own_private_names(list(sources.values()))
    missing = [
        f"{path.relative_to(ROOT)}:{n}: {line}"
        for path, source in sources.items()
        for n, line in uncommented_private_accesses(source, own)
    ]
    assert not missing, "private attributes without a '# private: <why>' comment:\n" + "\n".join(missing)


def test_the_check_finds_an_uncommented_access() -> None:
    source = "\n".join(
        [
            "import os",
            "import torch",
            "class C:",
            "    def f(self, trainer, cfg):",
            "        self._mine = 1",
            "        a = trainer.fit_loop._data_fetcher",  # flagged
            "        b = torch._foreach_norm([])  # private: one fused pass for every tensor's norm",
            "        c = torch._foreach_add([], 1)  # private:",  # a comment that says nothing: flagged
            "        return self._mine, cfg.model._target_, os._Environ, _helper(), a._mine",
            "def _helper():",
            "    return 0",
        ]
    )
    own = own_private_names([source])
    assert [n for n, _ in uncommented_private_accesses(source, own)] == [6, 8]
