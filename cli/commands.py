"""Command registration (filled in by the training, sampling and evaluation commands)."""


def register(group):
    return group
