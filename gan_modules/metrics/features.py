"""The project's own feature network: a small classifier whose penultimate layer embeds images.

There are no Inception weights offline, so FID, KID, precision/recall and the classifier score are
computed in this network's feature space. Numbers are comparable between runs of this project
that use the same network (its SHA-256 is reported beside every score), not with published
Inception-based figures.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class FeatureNet(nn.Module):
    """Two conv stages, global 4x4 pooling, a ``num_features`` embedding, a linear classifier.

    Takes images in [0, 1] of shape (N, in_channels, H, W); any H, W (they are resized to
    ``input_size``, the size the network was trained at).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, num_features: int = 128,
                 input_size: int = 28) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.input_size = in_channels, num_classes, input_size
        self.num_features = num_features
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, num_features), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(num_features, num_classes)

    def _prepare(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"The feature network takes {self.in_channels}-channel images, got {x.shape[1]} channels.")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def features(self, x: Tensor) -> Tensor:
        """The embedding used by FID, KID, precision/recall, density/coverage."""
        return self.body(self._prepare(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits."""
        return self.head(self.dropout(self.features(x)))

    def config(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "input_size": self.input_size,
                "width": self.body[0].out_channels, "num_features": self.num_features}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def feature_net_info(name: str) -> dict[str, Any]:
    """The record shipped beside the weights: accuracy, hash, how it was trained."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):  # a name, never a path out of WEIGHTS_DIR
        raise ValueError(f"{name!r} is not a feature network name (letters, digits and _), e.g. fashion_mnist.")
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))
        raise FileNotFoundError(
            f"No feature network named {name!r}; shipped: {shipped}. Train one with "
            f"`python -m gan_modules.metrics.train_feature_net dataset={name}`."
        )
    return json.loads(path.read_text())


def load_feature_net(name: str) -> tuple[FeatureNet, dict[str, Any]]:
    """The shipped feature network ``name`` in eval mode, after checking its recorded SHA-256."""
    info = feature_net_info(name)
    weights = WEIGHTS_DIR / f"{name}.pt"
    digest = file_sha256(weights)
    if digest != info["sha256"]:
        raise ValueError(
            f"{weights} has SHA-256 {digest[:12]}..., but {name}.json records {info['sha256'][:12]}...: the "
            "weights were changed or corrupted. Restore them (git checkout) or retrain the network."
        )
    net = FeatureNet(**info["architecture"])
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval(), info
