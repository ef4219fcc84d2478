"""Where seqlab's checkout keeps what is not Python: the one place that finds `conf/` (an editable install,
`pip install -e .`, runs from the checkout). Light on purpose: the launcher's Hydra callbacks import it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # src/seqlab/paths.py -> the checkout
CONF = ROOT / "conf"
MODEL_CONFIGS = CONF / "model"
