"""The one writer of tables (csv and markdown) and figures (png, or an RGB array for TensorBoard) for
seqlab.analysis: compare, probe, properties and report differ in what they put in a table, not in how a table
is written. Each caller keeps its own cell format (a `fmt` function), so every file reads as it did.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]


def columns_of(rows: Iterable[Row]) -> list[str]:
    """Every key of every row, first seen first (rows of one table may lack some keys)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def plain(value: Any) -> str:
    """A cell: 4 significant digits for floats, empty for None, str() for the rest."""
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def readable(value: Any) -> str:
    """A cell for wide tables: thousands separators for ints, exponents for large floats, `|` escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(
    rows: Sequence[Row],
    columns: Sequence[str] | None = None,
    fmt: Callable[[Any], str] = plain,
    header: Sequence[str] | None = None,
    missing: Any = None,
) -> str:
    """A GitHub markdown table (no trailing newline): `columns` of each row (default: every key), each cell
    `fmt(row.get(column, missing))`; `header` names the columns when their keys are not what to show."""
    columns = list(columns) if columns is not None else columns_of(rows)
    header = list(header) if header is not None else columns
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(r.get(c, missing)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], path: Path, columns: Sequence[str] | None = None) -> None:
    """One csv row per dict, `columns` in order (default: every key, first seen first); a missing key is empty."""
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns) if columns is not None else columns_of(rows))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def save_figure(fig: Any, path: Path, close: bool = True, **savefig: Any) -> None:
    """Write a matplotlib figure to `path` (savefig's keywords: dpi, bbox_inches, ...) and close it, unless
    the caller still needs it (e.g. for TensorBoard's add_figure)."""
    import matplotlib.pyplot as plt

    fig.savefig(path, **savefig)
    if close:
        plt.close(fig)


def figure_array(fig: Any) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 image (for TensorBoard's add_image and plt.imsave), closed."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image
