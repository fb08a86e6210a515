"""Limits of a submission, in a module of their own so that the command line can print them
in its help without importing the wire types (pydantic)."""

MAX_SPLIT = 8
"""Most QPU nodes one circuit may be split across."""

MAX_SHOTS = 100_000
"""Most shots one task may ask for."""

MAX_SWEEP_POINTS = 1_000
"""Most parameter sets (points) one sweep may carry."""
