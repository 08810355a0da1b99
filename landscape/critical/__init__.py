"""Critical-point finders: Newton-type searches on the gradient norm, with honest outcome labels.

Owns the search driver and statuses (``search``), starting points (``starts``), one module per
method (eigenvector following, Levenberg–Marquardt on ∇L = 0, Newton-MR, Dauphin-style damped
Newton, gradient-norm descent) and the closed-form deep linear autoencoder benchmark
(``linear_autoencoder``). Imports nothing
from storage, tracking or plotting.
"""

from landscape.critical.search import (
    AUTO,
    DEFAULT_METHOD,
    METHODS,
    STATUSES,
    CriticalPoint,
    Thresholds,
    analyse,
    find_critical_point,
    find_critical_points,
    resolve_method,
)
from landscape.critical.starts import (
    Start,
    perturbed_starts,
    start_radii,
    uniform_in_loss_starts,
)

__all__ = [
    "AUTO", "DEFAULT_METHOD", "METHODS", "STATUSES", "CriticalPoint", "Start", "Thresholds",
    "analyse", "find_critical_point", "find_critical_points", "perturbed_starts",
    "resolve_method", "start_radii", "uniform_in_loss_starts",
]
