"""Mean losses of the reconstruction task, shared by training, the analysis problems and the
closed-form benchmark.

Owns the autoencoder losses (targets are the inputs): ``autoencoder_loss``, ½ · mean over samples
of ‖x − x̂‖² (the library's choice), and ``mean_squared_error``, the mean over all entries (Frye
et al. 2019's). Both are written out rather than ``nn.functional.mse_loss``, whose derivative
formula fails under forward-over-reverse HVPs in torch 2.13 ("ZeroTensors are immutable").
Classification uses ``nn.functional.cross_entropy`` directly. Imports nothing but torch.

Example:
    >>> import torch
    >>> x, x_hat = torch.zeros(2, 4), torch.ones(2, 4)
    >>> float(autoencoder_loss(x_hat, x)), float(mean_squared_error(x_hat, x))
    (2.0, 1.0)
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["autoencoder_loss", "mean_squared_error"]


def autoencoder_loss(outputs: Tensor, inputs: Tensor) -> Tensor:
    """½ · mean over samples of the squared reconstruction error; ``[N, d]`` each → scalar."""
    return 0.5 * ((outputs - inputs) ** 2).sum(dim=1).mean()


def mean_squared_error(outputs: Tensor, inputs: Tensor) -> Tensor:
    """Mean over all ``N · d`` entries of the squared reconstruction error → scalar."""
    return ((outputs - inputs) ** 2).mean()
