"""g_h(T-1)/g_h(0) at initialisation, by spectral radius and seed: the `experiment=vanishing` RNN, untrained.

    SEQLAB_DATA_DIR=... python benchmarks/vanishing_init.py --seeds 1337 0 1 2 3

Builds each model exactly as `python train.py experiment=vanishing model.recurrent_radius=R seed=S` does
(same config, same seeding, same probe batch: the first 32 val chunks) and takes the gradient profile the
GradientProfile callback takes at step 0; no training, so it needs seconds, not the sweep's minutes.
`--double` runs the probe itself in float64: below ~1e-38 float32 gradients are denormal (few digits).
"""

import argparse
import statistics
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seqlab.training.callbacks.gradient_profile import gradient_profile
from seqlab.training.system import LanguageModel

CONF = Path(__file__).resolve().parents[1] / "conf"


def init_ratio(radius: float, seed: int, double: bool = False) -> float:
    overrides = ["experiment=vanishing", f"model.recurrent_radius={radius}", f"seed={seed}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)  # for ${hydra:...} in paths
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    system = LanguageModel(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        vocab_size=dm.vocab_size,
        context_length=cfg.data.context_length,
    )
    x, y = next(iter(dm.val_dataloader()))  # the callback's probe batch: the first 32 val chunks
    x, y = x[:32], y[:32]
    model = system.model.eval()
    g_h, _ = gradient_profile(model.double() if double else model, x, y)
    mean = g_h.mean(0)  # (T,) by distance, as in grad_profile.jsonl
    return float(mean[-1] / mean[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--radii", type=float, nargs="+", default=[0.5, 0.9, 1.0, 1.1, 1.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 0, 1, 2, 3])
    parser.add_argument("--double", action="store_true", help="the whole probe in float64 (training runs float32)")
    args = parser.parse_args()
    print("| radius r | " + " | ".join(f"seed {s}" for s in args.seeds) + " | median | range |")
    print("|---:|" + "---:|" * (len(args.seeds) + 2))
    for radius in args.radii:
        ratios = [init_ratio(radius, seed, args.double) for seed in args.seeds]
        row = " | ".join(f"{r:.2g}" for r in ratios)
        print(f"| {radius} | {row} | {statistics.median(ratios):.2g} | {min(ratios):.2g} – {max(ratios):.2g} |")


if __name__ == "__main__":
    main()
