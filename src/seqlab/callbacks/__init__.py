"""Callbacks that make a run's inner workings visible in TensorBoard."""

from seqlab.callbacks.gradient_profile import GradientProfile, gradient_profile
from seqlab.callbacks.progress import BudgetProgressBar
from seqlab.callbacks.text_samples import TextSamples
from seqlab.callbacks.training_health import TrainingHealth
from seqlab.callbacks.wall_clock import WallClockCurve

__all__ = [
    "BudgetProgressBar",
    "GradientProfile",
    "TextSamples",
    "TrainingHealth",
    "WallClockCurve",
    "gradient_profile",
]
