"""Calibrating crappifiers on real data: fit a preset's parameters to real low/high pairs
(``psr.calibration.fitting``, ``scripts/fit_crappifier.py``) by the distance of their residuals
(``psr.calibration.residuals``). The blind noise estimate from raw frames alone is ``psr.metrics.noise``
(``scripts/calibrate_noise.py``; the classical denoisers use it at inference too)."""
