"""Training tokens/s of seqlab's Lightning path against a plain PyTorch loop of the same model: in this process,
and in a separate process with torch's defaults (what a user would otherwise run).

    python benchmarks/throughput.py                                   # every model, Shakespeare (char) and PTB (word)
    python benchmarks/throughput.py --models rnn lstm --data ptb --steps 150 --repeats 3
    python benchmarks/throughput.py --quick                           # seconds: checks that it runs (CI)

For every model in conf/model/ and every corpus, four paths train the same model on the same batches with the
same optimizer (the one `LanguageModel.configure_optimizers` builds from conf/optim), alternating repeat by
repeat in a rotated order (this machine's timings swing by ±20 %), median and interquartile range reported:
- `plain`: a bare loop (forward, cross-entropy, backward, clip if configured, step) in this process;
- `own process`: the same loop in a separate process started with torch's defaults: none of the OMP_* or glibc
  malloc settings, no `torch.set_num_threads` (one such process serves every model: it waits for each request);
- `lightning`: `LanguageModel` under a bare `Trainer` (no logger, callbacks, checkpoints): Lightning's own cost;
- `seqlab`: the Trainer, logger and callbacks exactly as `python train.py` composes them (conf/train.yaml), with
  its thread choice (FreeCoreThreads: the free cores, re-checked) and its malloc setting.
Timing covers steps `--warmup`..`--steps` (the clock stops before the final validation). The ratios are seqlab /
plain tokens/s, over the repeats of each repeat's own ratio (the paths of one repeat ran seconds apart, so the
slow drift of load cancels): `vs own process` is the one a user sees; `ms/step` is the fixed per-step cost
seqlab adds over the in-process loop (1000/steps/s difference), what matters for fast steps such as the unigram's.
Stateful training (`--stateful`, recurrent models only): `data.stateful=true` on every path, so all three read
the train split as streams and carry the detached state from batch to batch (truncated BPTT).
`--accelerator gpu` times the CUDA path (the clock synchronises the device at the warmup step and the last one).
"""

from __future__ import annotations

import sys

from seqlab.launch.malloc import keep_freed_memory

PLAIN_PROCESS = "--plain-process" in sys.argv  # the separate loop: glibc's and torch's defaults, as a user's script
if not PLAIN_PROCESS:
    keep_freed_memory()  # as seqlab.training.run.train does: the in-process paths keep freed memory (launch/malloc.py)

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from seqlab.data import IGNORE, TextDataModule
from seqlab.launch.threads import plan_threads, read_cpu_times
from seqlab.training.callbacks.progress import quiet_lightning
from seqlab.training.callbacks.threads import DEFAULT_THREADS, FreeCoreThreads
from seqlab.training.system import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
STATEFUL_OVERRIDES = ["data.stateful=true"]
# ReLU with W_hh = I blows up under AdamW's first step at the default lr 3e-3 (conf/experiment/gradient_highways.yaml);
# the lr does not change the cost of a step
MODEL_OVERRIDES = {"irnn": ["optim.lr=3e-4"]}
PATHS = ("plain", "own process", "lightning", "seqlab")
# what a user's environment may hold that would keep the separate process from torch's and glibc's defaults
NOT_DEFAULTS = (
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
)


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


def epochs(dm: TextDataModule) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The train batches, epoch after epoch, as the Trainer reads them (a small corpus has fewer than --steps)."""
    while True:
        yield from dm.train_dataloader()


def plain(cfg: DictConfig, dm: TextDataModule, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds for steps warmup..steps of a bare loop over the same batches, model and optimizer."""
    system = make_system(cfg, dm).to(device)
    net, opt, clip = system.model, system.configure_optimizers(), cfg.trainer.get("gradient_clip_val")
    batches, state = epochs(dm), None
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


def lightning(
    cfg: DictConfig, dm: TextDataModule, steps: int, warmup: int, full: bool, threads: int | None = None
) -> float:
    """Seconds for steps warmup..steps of `LanguageModel` under a Trainer: bare, or as train.py builds it."""
    clock = StepClock(warmup)
    if full:
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        # train.py's thread choice, from the cores free now; restored after, for the paths that follow
        callbacks.append(FreeCoreThreads(plan_threads(threads, None, DEFAULT_THREADS), read_cpu_times()))
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
    before = torch.get_num_threads()
    try:
        trainer.fit(make_system(cfg, dm), datamodule=dm)
    finally:
        torch.set_num_threads(before)
    return clock.stopped - clock.started


class PlainProcess:
    """The plain loop in a separate process started with torch's defaults, kept for the whole benchmark: each
    request (a JSON line on its stdin) trains a fresh model and answers with the seconds; while it waits for
    the next request it uses no CPU."""

    def __init__(self, threads: int | None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in NOT_DEFAULTS}
        env["SEQLAB_MALLOC"] = "default"  # belt and braces: the worker does not call keep_freed_memory anyway
        cmd = [sys.executable, __file__, "--plain-process"] + (["--threads", str(threads)] if threads else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def seconds(self, **request: object) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:  # Lightning or Hydra may print: the answer is the line marked as one
            if line.startswith("seconds "):
                return float(line.split()[1])
        raise RuntimeError(f"the plain process ended (exit code {self.proc.wait()}); its stderr says why")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve_plain(threads: int | None) -> None:
    """The separate process: one plain loop per request, corpora encoded once each."""
    if threads:
        torch.set_num_threads(threads)
    datamodules: dict[tuple[str, ...], TextDataModule] = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for line in sys.stdin:
            r = json.loads(line)
            cfg = config(r["model"], r["data"], out_dir, r["steps"], r["extra"], r["accelerator"])
            key = (r["data"], *r["extra"])
            if key not in datamodules:
                datamodules[key] = instantiate(cfg.data)
                datamodules[key].prepare_data()
                datamodules[key].setup("fit")
            device = torch.device("cuda" if r["accelerator"] == "gpu" else "cpu")
            seconds = plain(cfg, datamodules[key], r["steps"], r["warmup"], device)
            print(f"seconds {seconds}", flush=True)


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median and the first and third quartiles (all three the value itself for a single repeat)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q1, q3


def rate_cell(values: list[float]) -> str:
    median, q1, q3 = spread(values)
    return f"{median / 1000:,.1f}k ({q1 / 1000:,.1f}–{q3 / 1000:,.1f})"


def ratio_cell(values: list[float]) -> str:
    median, q1, q3 = spread(values)
    return f"{median:.3f} ({q1:.3f}–{q3:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--data", nargs="+", default=["shakespeare", "ptb"], help="corpora (conf/data)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="every path (seqlab: threads=N); default: each its own"
    )
    parser.add_argument("--stateful", action="store_true", help="carried state (recurrent models only)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps, fewer PTB models: checks it runs")
    parser.add_argument("--plain-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.batch_size=32")
    args = parser.parse_args()
    if args.plain_process:
        return serve_plain(args.threads)
    # `--data shakespeare data.batch_size=64` : argparse gives the override to --data; it belongs to the overrides
    extra = [*(d for d in args.data if "=" in d), *args.overrides]
    args.data = [d for d in args.data if "=" not in d]
    if args.quick:
        # one thread everywhere: on a busy CI machine two spinning threads can make a tiny run take minutes
        args.steps, args.warmup, args.repeats, args.threads = 3, 1, 1, args.threads or 1
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
        f"torch {torch.__version__}, lightning {L.__version__}, {where}, {args.steps - args.warmup} timed steps, "
        f"{args.repeats} alternating repeats, overrides {extra or 'none'}; tokens/s and ratios: median (IQR)"
    )
    rows = [
        "| data | model | batch × context | plain, own process | plain, in process | Lightning (bare) | seqlab "
        "| seqlab / own process | seqlab / in process | ms/step |"
    ]
    rows.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    own_process = PlainProcess(args.threads)
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            for data in args.data:
                dm = None
                for model in args.models:
                    if args.quick and data != "shakespeare" and model not in quick_word_models:
                        continue
                    cfg = config(model, data, out_dir, args.steps, extra, args.accelerator)
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
                        for path in PATHS[r % len(PATHS) :] + PATHS[: r % len(PATHS)]:
                            if path == "plain":
                                took = plain(cfg, dm, args.steps, args.warmup, device)
                            elif path == "own process":
                                request = dict(model=model, data=data, steps=args.steps, warmup=args.warmup)
                                took = own_process.seconds(**request, extra=extra, accelerator=args.accelerator)
                            else:
                                took = lightning(cfg, dm, args.steps, args.warmup, path == "seqlab", args.threads)
                            seconds[path].append(took)
                    n, tokens = args.steps - args.warmup, dm.batch_size * dm.context_length
                    rates = {p: [n * tokens / s for s in v] for p, v in seconds.items()}
                    extra_ms = 1000 * (statistics.median(seconds["seqlab"]) - statistics.median(seconds["plain"])) / n
                    vs = {p: [a / b for a, b in zip(seconds[p], seconds["seqlab"], strict=True)] for p in PATHS}
                    rows.append(
                        f"| {data} | {model} | {dm.batch_size} × {dm.context_length} | {rate_cell(rates['own process'])} "
                        f"| {rate_cell(rates['plain'])} | {rate_cell(rates['lightning'])} | {rate_cell(rates['seqlab'])} "
                        f"| {ratio_cell(vs['own process'])} | {ratio_cell(vs['plain'])} | {extra_ms:+.2f} |"
                    )
                    print(rows[-1], flush=True)
    finally:
        own_process.close()
    print("\n".join(rows))  # again, together: Lightning's progress bar shares stdout


if __name__ == "__main__":
    main()
