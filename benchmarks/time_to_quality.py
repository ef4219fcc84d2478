"""seqlab's `experiment=shakespeare_quick` at 70 s, 3 and 5 minutes beside nanoGPT's CPU recipe, in nats/char on
nanoGPT's val split (the last 10 % of Tiny Shakespeare), as nanoGPT scores it: stateless 64-char chunks.

    python benchmarks/time_to_quality.py                         # 70 s, 3 min, 5 min: ≈10 minutes
    python benchmarks/time_to_quality.py --budgets 70            # one budget
    python benchmarks/time_to_quality.py --quick                 # a 3 s tiny run: checks that it works
    python benchmarks/time_to_quality.py -- model.hidden_size=512  # extra overrides for every run

Each budget is its own `python train.py experiment=shakespeare_quick trainer.max_time=...` (a schedule fitted to
the budget differs per budget, so one long run's curve is not the same thing). The run's best checkpoint is then
scored here on text[int(0.9 n):], the whole of nanoGPT's val split (seqlab's val + test of the preset, plus the
few characters int() leaves over): `stateless` in consecutive 64-char chunks, each from a zero state; and, for a
recurrent model, `stateful`: the state carried across the whole split. The reference rows are fixed numbers
(nanoGPT is not vendored): its CPU recipe measured on this machine, and a plain PyTorch 2×256 LSTM.
"""

from __future__ import annotations

from seqlab.launch.malloc import keep_freed_memory

# no OpenMP settings here: the runs inherit this environment, and train.py picks its own threads
keep_freed_memory()  # as seqlab.training.run.train does: every path keeps its freed memory (seqlab/launch/malloc.py)

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from seqlab.data import IGNORE, TextDataModule
from seqlab.data.batches import EvalBatches
from seqlab.training.system import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = [  # (what, seconds, nats/char on the last 10 %, source)
    ("nanoGPT CPU recipe (4×128 Transformer, 2000 iters)", 70, 1.898, "measured on this 2-core machine"),
    ("plain PyTorch 2×256 LSTM", 70, 1.71, "measured on this 2-core machine"),
    ("plain PyTorch 2×256 LSTM", 180, 1.52, "measured on this 2-core machine"),
]
TARGETS = {70: 1.70, 300: 1.45}


def hms(seconds: int) -> str:
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@torch.no_grad()
def nanogpt_val_loss(checkpoint: str, text: str, context: int = 64) -> dict[str, float]:
    """Mean nats/char over text[int(0.9 n):] (every char after the first predicted once)."""
    system = LanguageModel.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    ids = system.vocab.encode(list(text[int(0.9 * len(text)) :]))
    total = n = 0.0
    for x, y in EvalBatches(ids, context, batch_size=256):
        logits = system.model(x)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum").item()
        n += (y != IGNORE).sum().item()
    losses = {"stateless": total / n}
    if system.model.recurrent:  # one stream: the state carried from the split's first char
        logits, _ = system.model.forward_with_state(ids[None, :-1])
        losses["stateful"] = F.cross_entropy(logits[0], ids[1:]).item()
    return losses


def run_budget(seconds: int, out_dir: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=shakespeare_quick", f"trainer.max_time={hms(seconds)}"]
    cmd += [f"hydra.run.dir={out_dir}", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((out_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", nargs="+", type=int, default=[70, 180, 300], help="seconds of training")
    parser.add_argument("--quick", action="store_true", help="one 3 s run of a tiny model: checks that it works")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs under this dir")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.quick:
        args.budgets = [3]
        overrides += [
            "model.hidden_size=16",
            "model.num_layers=1",
            "data.batch_size=8",
            "trainer.val_check_interval=20",
        ]
    data = TextDataModule(data_dir=os.environ.get("SEQLAB_DATA_DIR", str(ROOT / "data")))
    data.prepare_data()
    text = data._texts()["all"]
    rows = [(what, s, loss, None, source) for what, s, loss, source in REFERENCES]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for seconds in args.budgets:
            metrics = run_budget(seconds, root / f"budget_{seconds}s", overrides)
            losses = nanogpt_val_loss(metrics["best_checkpoint"], text)
            curve = metrics["curve"][-1] if metrics.get("curve") else {}
            what = f"seqlab shakespeare_quick ({metrics['steps']} steps, {curve.get('s', '?')} s incl. validation)"
            rows.append((what, seconds, losses["stateless"], losses.get("stateful"), f"threads {metrics['threads']}"))
    print(f"nats/char on nanoGPT's val split (last 10 %, {len(text) - int(0.9 * len(text)):,} chars), 64-char chunks")
    print("| run | budget s | stateless | stateful | target | note |")
    print("|---|---:|---:|---:|---:|---|")
    for what, s, loss, stateful, note in sorted(rows, key=lambda r: r[1]):
        target = f"≤ {TARGETS[s]}" if s in TARGETS and what.startswith("seqlab") else ""
        stateful_text = f"{stateful:.3f}" if stateful is not None and math.isfinite(stateful) else ""
        print(f"| {what} | {s} | {loss:.3f} | {stateful_text} | {target} | {note} |")


if __name__ == "__main__":
    main()
