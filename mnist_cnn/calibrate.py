"""Confidence calibration: temperature scaling fitted on held-out images (Guo et al., 2017).

``fit_temperature(logits, labels)`` finds the T that minimises the negative log-likelihood of
softmax(logits / T); training stores it in every checkpoint and the predictor divides logits by it, so a
reported confidence of 0.9 is right about 9 times in 10. numpy/scipy only (no torch).
"""

from __future__ import annotations

import numpy as np


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising held-out NLL; 1.0 when there is nothing to fit."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    res = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))
