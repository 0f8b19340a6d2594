"""Run-level application: what the commands do to a run directory.

``runs`` loads a trained run and its priors; ``train``, ``fit_prior``, ``sample``, ``evaluate``
and ``export`` are one function each, called by the CLI.
"""
