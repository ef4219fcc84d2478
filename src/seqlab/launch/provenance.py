"""Which code made a run: the commit of the seqlab checkout, recorded by every run in its metrics.json.

A results page is often made hours after its sweep, at a later commit; the page names the commit its jobs ran.
Light (no torch): one `git` call of a few milliseconds, None where seqlab is not a git checkout (an installed
wheel) or git is missing.
"""

from __future__ import annotations

import subprocess

from seqlab.paths import ROOT


def git(*args: str) -> str | None:
    """`git -C ROOT args...`'s stdout, or None if git fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, str | bool | None]:
    """{"commit": HEAD's sha or None, "dirty": tracked files changed since it (None without a checkout)}."""
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
