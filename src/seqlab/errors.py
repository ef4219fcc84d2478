"""The two ways a run ends early on purpose; `seqlab.training.run` turns them into one-line messages."""


class ConfigError(ValueError):
    """A bad value in the config or the data, found before any training."""


class DivergedError(RuntimeError):
    """The loss or the gradient stopped being finite."""


class Interrupted(Exception):
    """SIGTERM asked the run to stop; its last checkpoint is saved."""
