"""Callbacks that make a run's inner workings visible in TensorBoard."""

from seqlab.training.callbacks.gradient_profile import GradientProfile, gradient_profile
from seqlab.training.callbacks.progress import BudgetProgressBar
from seqlab.training.callbacks.text_samples import TextSamples
from seqlab.training.callbacks.training_health import TrainingHealth
from seqlab.training.callbacks.wall_clock import WallClockCurve

__all__ = [
    "BudgetProgressBar",
    "GradientProfile",
    "TextSamples",
    "TrainingHealth",
    "WallClockCurve",
    "gradient_profile",
]
