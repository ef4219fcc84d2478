"""seqlab: why feedforward models fail on sequences, what recurrence buys, and what it costs."""

__version__ = "0.1.0"
