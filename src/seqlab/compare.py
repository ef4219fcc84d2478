"""`python -m seqlab.compare`: see seqlab/analysis/compare.py."""

from seqlab.analysis.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
