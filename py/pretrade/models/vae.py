"""The Layer-2 variational autoencoder (PyTorch): trained on normal markets, exported to ONNX.

It learns what normal normalised features look like; its reconstruction error per feature is the
raw material of the anomaly score (pretrade.models.anomaly calibrates and serves it). Training is
reproducible for a seed. The exported graph maps features (n, d) to squared reconstruction
errors per feature (n, d), reconstructing from the latent mean (no sampling at serve time).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaeConfig:
    """Architecture and training parameters (recorded in the model card)."""

    hidden: tuple[int, ...] = (32, 16)
    latent: int = 4
    beta: float = 0.5  # weight of the KL term
    epochs: int = 8
    batch: int = 512
    lr: float = 2e-3
    input_clip: float = 8.0  # inputs are normalised features, clipped like the engine's z


class VAE(nn.Module):
    """An MLP encoder to a Gaussian latent and an MLP decoder back to the features."""

    def __init__(self, d: int, cfg: VaeConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = d
        for h in cfg.hidden:
            layers += [nn.Linear(prev, h), nn.GELU()]
            prev = h
        self.encoder = nn.Sequential(*layers)
        self.mu = nn.Linear(prev, cfg.latent)
        self.logvar = nn.Linear(prev, cfg.latent)
        layers = []
        prev = cfg.latent
        for h in reversed(cfg.hidden):
            layers += [nn.Linear(prev, h), nn.GELU()]
            prev = h
        layers.append(nn.Linear(prev, d))
        self.decoder = nn.Sequential(*layers)
        self.clip = cfg.input_clip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.clamp(x, -self.clip, self.clip)
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction error per feature, reconstructing from the latent mean."""
        x = torch.clamp(x, -self.clip, self.clip)
        recon = self.decoder(self.mu(self.encoder(x)))
        return (x - recon) ** 2


class _Errors(nn.Module):
    """The exported graph: features in, squared errors per feature out."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.errors(x)


def train_vae(
    X: np.ndarray, cfg: VaeConfig | None = None, seed: int = 0, progress: bool = True
) -> VAE:
    """Train on rows of normal behaviour X (n, d), reproducibly for a seed."""
    cfg = cfg or VaeConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X = np.clip(np.asarray(X, dtype=np.float32), -cfg.input_clip, cfg.input_clip)
    model = VAE(X.shape[1], cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = torch.from_numpy(X)
    n = len(X)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(n))
        total = recon_sum = 0.0
        for start in range(0, n, cfg.batch):
            xb = data[order[start : start + cfg.batch]]
            recon, mu, logvar = model(xb)
            rec = ((recon - xb) ** 2).sum(dim=1).mean()
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
            loss = rec + cfg.beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
            recon_sum += float(rec.detach()) * len(xb)
        if progress:
            log.info(
                "epoch %d/%d: loss %.4f, reconstruction %.4f per row",
                epoch + 1,
                cfg.epochs,
                total / n,
                recon_sum / n,
            )
    model.eval()
    return model


def errors(model: VAE, X: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """Squared reconstruction errors per feature (n, d) from the torch model."""
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            xb = torch.from_numpy(np.array(X[start : start + batch], dtype=np.float32))
            out.append(model.errors(xb).numpy())
    return np.concatenate(out) if out else np.empty((0, model.decoder[-1].out_features), np.float32)


def export_onnx(model: VAE, d: int, path: str) -> None:
    """Write the errors graph to ONNX with a dynamic batch dimension (instruments)."""
    model.eval()
    example = torch.zeros(2, d, dtype=torch.float32)
    with (
        warnings.catch_warnings()
    ):  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _Errors(model),
            (example,),
            path,
            input_names=["features"],
            output_names=["sq_errors"],
            dynamic_axes={"features": {0: "n"}, "sq_errors": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )


def config_dict(cfg: VaeConfig) -> dict:
    """The config as plain JSON-able data."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
