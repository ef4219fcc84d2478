"""A run's gradient profile recomputed from its checkpoint, the probe in float32 (as in training) and float64.

    SEQLAB_DATA_DIR=... python benchmarks/profile_float64.py outputs/runs/<run>/checkpoints/best-*.ckpt

The float32 probe's gradients are exact down to ~1e-38 and end at ~1e-45 (float32's smallest denormal); the
float64 probe shows where the decay goes beyond that. Same probe batch as the GradientProfile callback: the
first 32 val chunks of the run's corpus (Tiny Shakespeare's default splits; pass --corpus for another).
"""

import argparse
import os

from seqlab.data import TextDataModule
from seqlab.training.callbacks.gradient_profile import gradient_profile
from seqlab.training.system import LanguageModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--distances", type=int, nargs="+", default=[0, 16, 64, 100, 124, 128, 200, 255])
    args = parser.parse_args()
    system = LanguageModel.load_from_checkpoint(args.checkpoint, map_location="cpu")
    T = system.hparams.context_length
    data_dir = os.environ.get("SEQLAB_DATA_DIR", "data")
    dm = TextDataModule(args.corpus, data_dir=data_dir, context_length=T, batch_size=32)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    model = system.model.eval()
    profiles = {"float32": gradient_profile(model, x, y), "float64": gradient_profile(model.double(), x, y)}
    print(f"{type(model).__name__}, T = {T}: mean over the probe batch")
    print("| d | " + " | ".join(f"g_{k} {p}" for p in profiles for k in "hx") + " |")
    print("|---:|" + "---:|" * 4)
    for d in [d for d in args.distances if d < T]:
        cells = [f"{g.mean(0)[d]:.3g}" if g is not None else "" for p in profiles.values() for g in p]
        print(f"| {d} | " + " | ".join(cells) + " |")
    for name, (_, g_x) in profiles.items():
        zero = (g_x.mean(0) == 0).nonzero()
        print(f"{name}: g_x(d) is exactly 0 from d = {int(zero[0]) if len(zero) else 'nowhere'}")


if __name__ == "__main__":
    main()
