"""The TensorBoard dashboard a run opens on: a Custom Scalars layout (its own tab) that puts perplexity, the losses
and the gradient's reach side by side, instead of the Scalars tab's alphabetical list that starts with `epoch`."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger

# {category: {chart title: ["Multiline", [tag regexes]]}}, TensorBoard's custom-scalars layout format
LAYOUT: dict[str, dict[str, list[Any]]] = {
    "seqlab": {
        "perplexity (val; stateful: the state carried across the split)": [
            "Multiline",
            [r"^val/ppl$", r"^val/ppl_stateful$", r"^val/ppl_best$"],
        ],
        "loss (train and val, nats/token)": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
        "gradient's reach ‖∂L_T/∂h_{T-1-d}‖ by distance d": ["Multiline", [r"^grad/h/d=\d+$"]],
        "gradient reaching the inputs ‖∂L_T/∂x_{T-1-d}‖": ["Multiline", [r"^grad/x/d=\d+$"]],
        "gradient norms before clipping, by parameter group": ["Multiline", [r"^health/grad_norm"]],
        "largest singular value of the recurrent weights": ["Multiline", [r"^health/sigma_max/"]],
    }
}


def add_dashboard(logger: Any) -> None:
    """Write the layout into the run's event file (a TensorBoardLogger; others are left alone)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_custom_scalars(LAYOUT)
