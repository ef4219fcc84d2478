"""`python -m seqlab.tune`: see seqlab/launch/tune.py."""

from seqlab.launch.tune import main

if __name__ == "__main__":
    raise SystemExit(main())
