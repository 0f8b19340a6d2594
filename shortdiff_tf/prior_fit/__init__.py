"""Fitting the auxiliary prior nu_phi at T by maximum likelihood (paper Sec. 3).

``targets``: the points nu_phi is fitted to (diffused data, or the PF-ODE image of the data);
``mixtures``: closed-form and scikit-learn fits (Gaussian, GMM, DP-GMM);
``glow``: the distributed, resumable Glow fit; ``store``: RUN/prior on disk.
The run-level entry point is ``app.fit_prior``.
"""
