"""Training tokens/s of seqlab's Lightning path against a plain PyTorch loop of the same model, in one process.

    python benchmarks/throughput.py                                   # every model, Shakespeare (char) and PTB (word)
    python benchmarks/throughput.py --models rnn lstm --data ptb --steps 150 --repeats 3
    python benchmarks/throughput.py --quick                           # seconds: checks that it runs (CI)

For every model in conf/model/ and every corpus, three paths train the same model on the same batches with the
same optimizer (the one `LanguageModel.configure_optimizers` builds from conf/optim), alternating repeat by
repeat in a rotated order (this machine's timings swing by ±20 %), medians reported:
- `plain`: a bare loop (forward, cross-entropy, backward, clip if configured, step);
- `lightning`: `LanguageModel` under a bare `Trainer` (no logger, callbacks, checkpoints): Lightning's own cost;
- `seqlab`: the Trainer, logger and callbacks exactly as `python train.py` composes them (conf/train.yaml).
Timing covers steps `--warmup`..`--steps` (the clock stops before the final validation). `ratio` is seqlab /
plain tokens/s, the median over repeats of each repeat's own ratio; `ms/step` the fixed per-step cost seqlab
adds over the plain loop (1000/steps/s difference), the number that matters for fast steps such as the unigram's.

The thread settings are train.py's (OMP_WAIT_POLICY=PASSIVE unless set; see benchmarks/threads.py).
Stateful training (`--stateful`, recurrent models only): `data.stateful=true` on every path, so all three read
the train split as streams and carry the detached state from batch to batch (truncated BPTT).
`--accelerator gpu` times the CUDA path (the clock synchronises the device at the warmup step and the last one).
"""

from __future__ import annotations

from seqlab.launch.malloc import keep_freed_memory
from seqlab.launch.openmp import sleep_when_idle

sleep_when_idle()  # as train.py does, before torch is imported: both paths run with seqlab's default
keep_freed_memory()  # as seqlab.training.run.train does: every path keeps its freed memory (seqlab/launch/malloc.py)

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from seqlab.data import IGNORE, TextDataModule
from seqlab.training.callbacks.progress import quiet_lightning
from seqlab.training.system import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
STATEFUL_OVERRIDES = ["data.stateful=true"]
# ReLU with W_hh = I blows up under AdamW's first step at the default lr 3e-3 (conf/experiment/gradient_highways.yaml);
# the lr does not change the cost of a step
MODEL_OVERRIDES = {"irnn": ["optim.lr=3e-4"]}
PATHS = ("plain", "lightning", "seqlab")


class StepClock(L.Callback):
    """Wall clock from the end of step `warmup` to the end of the last step (by global step, across epochs).

    It reads before the other callbacks of each step, so the window is whole steps, each with the callback
    work that follows it, and leaves out the one-off work after the last (the final gradient profile and
    spectra; benchmarks/probe_cost.py measures the profile's share of a run)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.stopped = warmup, 0.0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in (self.warmup, trainer.max_steps):  # only there: a sync per step would slow it
            synchronize(pl_module.device)
        self.stopped = time.perf_counter()
        if trainer.global_step == self.warmup:
            self.started = self.stopped


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config(model: str, data: str, out_dir: str, steps: int, extra: list[str], accelerator: str = "cpu") -> DictConfig:
    """The config `python train.py model=<model> data=<data> ...` runs, with no validation before the end."""
    overrides = [f"model={model}", f"data={data}", f"trainer.accelerator={accelerator}", f"trainer.max_steps={steps}"]
    # a size override only where the model has that key (e.g. no emb_dim for the transformer)
    keys = OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml").keys()
    extra = [o for o in extra if not o.startswith("model.") or o.split("=", 1)[0].removeprefix("model.") in keys]
    overrides += [f"trainer.val_check_interval={steps + 1}", "+trainer.limit_val_batches=1"]
    overrides += [*MODEL_OVERRIDES.get(model, []), *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = out_dir
    HydraConfig().set_config(cfg)
    return cfg


def make_system(cfg: DictConfig, dm: TextDataModule) -> LanguageModel:
    torch.manual_seed(0)
    system = LanguageModel(
        OmegaConf.to_container(cfg.model, resolve=True),
        OmegaConf.to_container(cfg.optim, resolve=True),
        vocab_size=dm.vocab_size,
        context_length=dm.context_length,
        level=dm.level,
        stateful=dm.stateful,
    )
    system.vocab = dm.vocab
    return system


def plain(cfg: DictConfig, dm: TextDataModule, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds for steps warmup..steps of a bare loop over the same batches, model and optimizer."""
    system = make_system(cfg, dm).to(device)
    net, opt, clip = system.model, system.configure_optimizers(), cfg.trainer.get("gradient_clip_val")
    batches, state = iter(dm.train_dataloader()), None
    for step in range(1, steps + 1):
        x, y = (t.to(device, non_blocking=True) for t in next(batches))
        if dm.stateful:  # truncated BPTT: the state carried between chunks, detached
            logits, state = net.forward_with_state(x, state)
            state = tuple(s.detach() for s in state)
        else:
            logits = net(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
    synchronize(device)
    return time.perf_counter() - started


def lightning(cfg: DictConfig, dm: TextDataModule, steps: int, warmup: int, full: bool) -> float:
    """Seconds for steps warmup..steps of `LanguageModel` under a Trainer: bare, or as train.py builds it."""
    clock = StepClock(warmup)
    if full:
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        trainer = instantiate(cfg.trainer, callbacks=[clock, *callbacks], logger=instantiate(cfg.logger))
    else:
        trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            max_steps=steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
        )
    trainer.fit(make_system(cfg, dm), datamodule=dm)
    return clock.stopped - clock.started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--data", nargs="+", default=["shakespeare", "ptb"], help="corpora (conf/data)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stateful", action="store_true", help="carried state (recurrent models only)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps, fewer PTB models: checks it runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.batch_size=32")
    args = parser.parse_args()
    extra = list(args.overrides)
    if args.quick:
        args.steps, args.warmup, args.repeats = 3, 1, 1
        extra += ["model.hidden_size=16", "data.batch_size=4", "data.context_length=16"]
        quick_word_models = {"unigram", "rnn"}  # the 10k softmax with the smallest and a recurrent model
    if args.stateful:
        extra += STATEFUL_OVERRIDES
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu: no CUDA device on this machine")
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {where}, "
        f"{args.steps - args.warmup} timed steps, {args.repeats} alternating repeats, overrides {extra or 'none'}"
    )
    rows = [
        "| data | model | batch × context | plain tokens/s | Lightning (bare) | seqlab | seqlab / plain | ms/step |"
    ]
    rows.append("|---|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as out_dir:
        for data in args.data:
            dm = None
            for model in args.models:
                cfg = config(model, data, out_dir, args.steps, extra, args.accelerator)
                if args.quick and data != "shakespeare" and model not in quick_word_models:
                    continue
                if args.stateful and "forward_with_state" not in dir(
                    instantiate(cfg.model, vocab_size=2, context_length=4)
                ):
                    continue
                if dm is None:  # one corpus, encoded once, for every model and path
                    dm = instantiate(cfg.data)
                    dm.prepare_data()
                    dm.setup("fit")
                seconds: dict[str, list[float]] = {p: [] for p in PATHS}
                for r in range(args.repeats):  # alternate, each repeat in a rotated order: no path is always first
                    for path in PATHS[r % 3 :] + PATHS[: r % 3]:
                        if path == "plain":
                            seconds[path].append(plain(cfg, dm, args.steps, args.warmup, device))
                        else:
                            seconds[path].append(lightning(cfg, dm, args.steps, args.warmup, full=path == "seqlab"))
                n, tokens = args.steps - args.warmup, dm.batch_size * dm.context_length
                s = {p: statistics.median(v) for p, v in seconds.items()}
                rate = {p: n * tokens / v for p, v in s.items()}
                extra_ms = 1000 * (s["seqlab"] - s["plain"]) / n
                # the two paths of one repeat ran minutes apart at most: their ratio cancels the slow drift of load
                ratio = statistics.median(p / q for p, q in zip(seconds["plain"], seconds["seqlab"], strict=True))
                rows.append(
                    f"| {data} | {model} | {dm.batch_size} × {dm.context_length} | {rate['plain']:,.0f} | "
                    f"{rate['lightning']:,.0f} | {rate['seqlab']:,.0f} | {ratio:.3f} | {extra_ms:+.2f} |"
                )
                print(rows[-1], flush=True)
    print("\n".join(rows))  # again, together: Lightning's progress bar shares stdout


if __name__ == "__main__":
    main()
