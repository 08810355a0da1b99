"""landscape: post-hoc analysis of neural-network loss landscapes.

The flow: checkpoint → ``Objective(θ)`` (loss, gradient, batched HVPs, dense Hessian) → analysis
passes (``critical``, ``spectrum``, …) → results stored in Zarr and logged to MLflow.
"""

from landscape.objective import DenseTooLargeError, NonFiniteLossError, Objective

__all__ = ["DenseTooLargeError", "NonFiniteLossError", "Objective"]
__version__ = "0.1.0"
