"""Training tokens/s of seqlab's Lightning path against a plain PyTorch loop of the same model, in one process.

    python benchmarks/throughput.py --models rnn mlp_window --steps 150 --repeats 3

Both paths train the same model class on the same Tiny Shakespeare batches with AdamW; the Lightning path runs
the real `LanguageModel` under a `Trainer` (no validation, logger or checkpoints, so only the per-step cost is
compared). Timing starts after `--warmup` steps. Repeats alternate the two paths and report medians, since this
machine's timings swing by ±20 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from seqlab.data import TextDataModule
from seqlab.system import LanguageModel

ROOT = Path(__file__).resolve().parents[1]


class StepClock(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.stopped = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stopped = time.perf_counter()


def make_system(model: str, dm: TextDataModule, lr: float) -> LanguageModel:
    model_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml"))
    optim = {"_target_": "torch.optim.AdamW", "lr": lr, "weight_decay": 0.1}
    return LanguageModel(model_cfg, optim, vocab_size=dm.vocab_size, context_length=dm.context_length)


def plain_loop(model: str, dm: TextDataModule, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    net = make_system(model, dm, 3e-3).model  # the bare nn.Module
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    batches = iter(dm.train_dataloader())
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        x, y = next(batches)
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (steps - warmup) * dm.batch_size * dm.context_length / (time.perf_counter() - started)


def lightning_path(model: str, dm: TextDataModule, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(make_system(model, dm, 3e-3), train_dataloaders=dm.train_dataloader())
    return (steps - warmup) * dm.batch_size * dm.context_length / (clock.stopped - clock.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["unigram", "mlp_window", "mlp_padded", "rnn"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--context-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = os.environ.get("SEQLAB_DATA_DIR", str(ROOT / "data"))
    dm = TextDataModule(data_dir=data_dir, context_length=args.context_length, batch_size=args.batch_size)
    dm.prepare_data()
    dm.setup()
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size} x context {args.context_length}, {args.steps - args.warmup} timed steps"
    )
    print("| model | plain PyTorch tokens/s | Lightning tokens/s | Lightning / plain |")
    print("|---|---:|---:|---:|")
    for model in args.models:
        plain, lightning = [], []
        for _ in range(args.repeats):
            plain.append(plain_loop(model, dm, args.steps, args.warmup))
            lightning.append(lightning_path(model, dm, args.steps, args.warmup))
        p, lt = statistics.median(plain), statistics.median(lightning)
        print(f"| {model} | {p:,.0f} | {lt:,.0f} | {lt / p:.3f} |", flush=True)


if __name__ == "__main__":
    main()
