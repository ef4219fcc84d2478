"""`python -m seqlab.properties`: see seqlab/analysis/properties.py."""

from seqlab.analysis.properties import main

if __name__ == "__main__":
    raise SystemExit(main())
