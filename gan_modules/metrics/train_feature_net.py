"""Train and ship a feature network for one labelled dataset (one command, a few minutes on a CPU).

    python -m gan_modules.metrics.train_feature_net dataset=fashion_mnist epochs=5
    python -m gan_modules.metrics.train_feature_net dataset=digits epochs=30 input_size=8

Writes ``gan_modules/metrics/weights/<dataset>.pt`` (weights only) and ``<dataset>.json`` (test
accuracy, SHA-256 of the weights, architecture, the command that made it).
"""
from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_modules.atomic_files import atomic_write_text
from gan_modules.checkpoint_io import atomic_torch_save
from gan_modules.config import compose_config
from gan_modules.metrics.features import WEIGHTS_DIR, FeatureNet, file_sha256

DEFAULTS = {"dataset": "fashion_mnist", "epochs": 5, "batch_size": 128, "lr": 1e-3, "seed": 0, "width": 32,
            "num_features": 128, "input_size": None, "out_dir": str(WEIGHTS_DIR)}


def labelled_datamodule(name: str, batch_size: int, seed: int):
    """The project's datamodule for ``name`` with images in [0, 1]."""
    cfg = compose_config([f"dataset={name}", "model.data_range=[0.0,1.0]", f"dataset.batch_size={batch_size}",
                          f"seed={seed}"])
    datamodule = instantiate(cfg.dataset)
    if datamodule.num_classes is None:
        raise ValueError(f"dataset={name} has no labels: a feature network is trained as a classifier.")
    datamodule.setup("fit")
    return datamodule


@torch.no_grad()
def accuracy(net: FeatureNet, loader) -> float:
    net.eval()
    correct = total = 0
    for x, y in loader:
        correct += (net(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total


def train_feature_net(cfg: DictConfig) -> dict:
    torch.manual_seed(cfg.seed)
    dm = labelled_datamodule(cfg.dataset, cfg.batch_size, cfg.seed)
    channels, size = dm.sample_shape[0], dm.sample_shape[-1]
    net = FeatureNet(channels, dm.num_classes, cfg.width, cfg.num_features, cfg.input_size or size)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    start = time.time()
    for epoch in range(cfg.epochs):
        net.train()
        for x, y in dm.train_dataloader():
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        print(f"epoch {epoch + 1}/{cfg.epochs}: last batch loss {loss.item():.3f}", flush=True)
    test_acc = accuracy(net, dm.test_dataloader())
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{cfg.dataset}.pt"
    atomic_torch_save(net.state_dict(), weights)
    info = {
        "dataset": cfg.dataset,
        "test_accuracy": round(test_acc, 4),
        "test_split_size": len(dm.test_dataset),
        "sha256": file_sha256(weights),
        "architecture": net.config(),
        "training": {k: cfg[k] for k in ("epochs", "batch_size", "lr", "seed")},
        "train_seconds": round(time.time() - start, 1),
        "command": "python -m gan_modules.metrics.train_feature_net " + " ".join(sys.argv[1:]),
        "date": date.today().isoformat(),
    }
    atomic_write_text(out / f"{cfg.dataset}.json", json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))
    return info


def main(argv: list[str] | None = None) -> dict:
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(sys.argv[1:] if argv is None else argv))
    unknown = set(cfg.keys()) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"train_feature_net: unknown option(s) {sorted(unknown)}; options: {sorted(DEFAULTS)}")
    return train_feature_net(cfg)


if __name__ == "__main__":
    main()
