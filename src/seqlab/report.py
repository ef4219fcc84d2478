"""`python -m seqlab.report`: see seqlab/analysis/report.py."""

from seqlab.analysis.report import main

if __name__ == "__main__":
    raise SystemExit(main())
