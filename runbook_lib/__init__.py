"""Support package for the rollout runbooks: parameters, steps, runner, archive and clients."""

__version__ = "0.1.0"
