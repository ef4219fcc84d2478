"""What does the GradientProfile callback cost? Training time with it on and off, alternated.

    OMP_NUM_THREADS=2 SEQLAB_DATA_DIR=... python benchmarks/probe_cost.py --steps 1000 --every 250 --repeats 3

Each repeat trains the same model twice from the same seed, with and without the callback (order
alternating), and reports the median share of the training time it adds, plus the time of one probe
(measure + scalars + figure + JSONL) and the share that implies: t_probe / (every × t_step).
"""

import argparse
import os
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from seqlab.data import TextDataModule
from seqlab.training.callbacks import GradientProfile
from seqlab.training.system import LanguageModel


class TimedProfile(GradientProfile):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds: list[float] = []

    def _run(self, trainer, pl_module) -> None:
        started = time.perf_counter()
        before = len(self.history)
        super()._run(trainer, pl_module)
        if len(self.history) > before:
            self.seconds.append(time.perf_counter() - started)


def train_seconds(args: argparse.Namespace, dm: TextDataModule, profile: TimedProfile | None) -> float:
    L.seed_everything(0)
    system = LanguageModel(
        model={"_target_": f"seqlab.models.{args.model}", "hidden_size": args.hidden_size, "emb_dim": 64},
        optim={"_target_": "torch.optim.AdamW", "lr": 3e-3},
        vocab_size=dm.vocab_size,
        context_length=dm.context_length,
    )
    system.vocab = dm.vocab
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(
            max_steps=args.steps,
            limit_val_batches=0,
            logger=TensorBoardLogger(out, name="", version=""),
            callbacks=[profile] if profile else [],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=10,
            default_root_dir=out,
        )
        started = time.perf_counter()
        trainer.fit(system, datamodule=dm)
        return time.perf_counter() - started


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250, help="GradientProfile.every_n_steps")
    parser.add_argument("--probe-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="RNN")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--context-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    dm = TextDataModule(
        "shakespeare",
        data_dir=os.environ.get("SEQLAB_DATA_DIR", "data"),
        context_length=args.context_length,
        batch_size=args.batch_size,
    )
    dm.prepare_data()
    dm.setup("fit")
    off, on, probes = [], [], []
    for repeat in range(args.repeats):
        profile = TimedProfile(every_n_steps=args.every, probe_size=args.probe_size)
        for with_probe in (repeat % 2 == 0, repeat % 2 == 1):
            seconds = train_seconds(args, dm, profile if with_probe else None)
            (on if with_probe else off).append(seconds)
        probes += profile.seconds[1:]  # the first pays for importing matplotlib once
        share = on[-1] / off[-1] - 1
        probe_times = ", ".join(f"{t:.2f}" for t in profile.seconds)
        print(f"repeat {repeat}: off {off[-1]:.1f} s, on {on[-1]:.1f} s ({share:+.1%}); probes {probe_times}")
    t_step = statistics.median(off) / args.steps
    t_probe = statistics.median(probes) if probes else float("nan")
    shape = f"{args.model} H={args.hidden_size}, T={args.context_length}, B={args.batch_size}"
    print(f"threads {torch.get_num_threads()}, {shape}")
    print(f"step {t_step * 1e3:.1f} ms, one probe {t_probe * 1e3:.0f} ms")
    measured = statistics.median(on) / statistics.median(off) - 1
    print(f"measured: on/off - 1 = {measured:+.1%} (medians of {args.repeats}; noisy on a shared machine)")
    print(f"implied at every_n_steps={args.every}: {t_probe / (args.every * t_step):.1%} of training time")


if __name__ == "__main__":
    main()
