"""Generate text from a checkpoint.

python sample.py outputs/runs/<run>/checkpoints/last.ckpt --prompt "ROMEO:" --length 300 --temperature 0.8

Models with a carried state (rnn, lstm, gru, the other recurrent cells, ssm, mingru, deltanet) stream: one step
per token, so --length may be far longer than the training context at a constant cost per token. The
Transformer steps on its key/value cache (re-read once the window is full); feedforward models re-read a window
cropped to the training context.
"""

import argparse
import math
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file written by train.py")
    parser.add_argument("--prompt", default="", help="text to continue (default: the start of a line)")
    parser.add_argument("--length", type=int, default=500, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    args = parser.parse_args()
    # checked before importing torch and Lightning (seconds), so a typo answers at once
    if not math.isfinite(args.temperature):
        sys.exit(f"error: --temperature={args.temperature}: must be a finite number")
    if args.temperature <= 0:
        sys.exit(f"error: --temperature={args.temperature}: must be positive")
    if args.length < 0:
        sys.exit(f"error: --length={args.length}: must be zero or more")
    if not args.checkpoint.is_file():
        sys.exit(f"error: {args.checkpoint}: no such checkpoint file")

    from seqlab.training.sampling import sample_text
    from seqlab.training.system import LanguageModel

    try:  # on the CPU first, so a device problem is not mistaken for a bad file
        system = LanguageModel.load_from_checkpoint(args.checkpoint, map_location="cpu")
    except Exception as err:  # truncated, garbage, or another program's (torch's advice to unpickle it is no help)
        sys.exit(f"error: {args.checkpoint}: not a seqlab checkpoint (loading it raised {type(err).__name__})")
    if system.vocab is None:
        sys.exit(f"error: {args.checkpoint}: holds no vocabulary (not written by train.py?)")
    try:
        system.to(args.device)
    except (RuntimeError, AssertionError) as err:  # an unknown device, or one this machine lacks
        sys.exit(f"error: --device={args.device}: {(str(err).splitlines() or [''])[0]}")
    system.eval()
    text, unknown = sample_text(system, args.prompt, args.length, args.temperature, args.seed)
    if unknown:
        print(f"warning: {unknown} not in the vocabulary; read as <unk>", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
