"""`python -m seqlab.probe`: see seqlab/analysis/probe.py."""

from seqlab.analysis.probe import main

if __name__ == "__main__":
    raise SystemExit(main())
