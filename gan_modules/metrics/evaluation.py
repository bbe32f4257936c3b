"""Score generated samples against a dataset split, in the project's own feature space.

Images: FID, KID, classifier score, improved precision/recall (k=3), density/coverage (k=5) and
class coverage, all on features of the shipped feature network (never Inception). 2-D toy data:
the mode-coverage protocol. Every result carries its protocol and the real-vs-real floor (train
images scored against the same split in the same way).
"""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gan_modules.metrics.features import FeatureNet
from gan_modules.metrics.modes import mode_statistics
from gan_modules.metrics.scores import (
    class_coverage,
    classifier_score,
    density_coverage,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)
from gan_modules.config import compose_config

FEATURE_NOTE = ("Features come from this project's own classifier (feature network {name}, sha256 {sha}), "
                "not Inception: compare numbers only with others from the same network.")

# For older checkpoints only: their dataset configs predate the `feature_net` key, so the network
# their datamodule was scored with then is looked up by its `_target_`.
OLDER_CHECKPOINT_FEATURE_NETS = {
    "datamodules.idx.FashionMNISTDataModule": "fashion_mnist",
    "datamodules.idx.MNISTDataModule": "mnist",
    "datamodules.digits.DigitsDataModule": "digits",
    "datamodules.cifar10.CIFAR10DataModule": "cifar10",
}


def feature_net_name(dataset_cfg: DictConfig | dict) -> str | None:
    """The feature network a dataset config names (``feature_net``; None where none fits)."""
    if "feature_net" in dataset_cfg:
        return dataset_cfg["feature_net"]
    return OLDER_CHECKPOINT_FEATURE_NETS.get(str(dataset_cfg.get("_target_")))


def dataset_config(name: str) -> DictConfig:
    """The project's config for ``dataset=name``, with images scaled to [0, 1]."""
    model = "model=mlp_toy" if name.startswith("toy2d") else "model.data_range=[0.0,1.0]"
    cfg = compose_config([f"dataset={name}", model])
    return OmegaConf.create(OmegaConf.to_container(cfg.dataset, resolve=True))


def unit_range_datamodule(dataset_cfg: DictConfig | dict) -> Any:
    """Instantiate a datamodule config (e.g. a checkpoint's) with images in [0, 1]."""
    cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(dataset_cfg), resolve=True))
    if cfg.get("value_range") is not None:
        cfg.value_range = [0.0, 1.0]
    datamodule = instantiate(cfg)
    datamodule.setup("fit")
    return datamodule


def take(dataset: Any, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` random items (all if fewer) of a dataset, as stacked tensors."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    items = [dataset[int(i)] for i in order]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


@torch.no_grad()
def embed(net: FeatureNet, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Features and class probabilities of images in [0, 1]."""
    feats, probs = [], []
    for chunk in images.split(batch_size):
        f = net.features(chunk.float())
        feats.append(f)
        probs.append(torch.softmax(net.head(f), dim=1))
    return torch.cat(feats).double(), torch.cat(probs)


def score_features(real: tuple[Tensor, Tensor], fake: tuple[Tensor, Tensor], real_labels: Tensor,
                   num_classes: int, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    (real_f, _), (fake_f, fake_p) = real, fake
    kid_mean, kid_std = kernel_inception_distance(real_f, fake_f, subset_size=kid_subset_size, seed=seed)
    reference = torch.bincount(real_labels.long(), minlength=num_classes).double()
    coverage = class_coverage(fake_p.argmax(1), num_classes, reference=reference / reference.sum())
    return {
        "fid": frechet_distance(real_f, fake_f),
        "kid": kid_mean,
        "kid_std": kid_std,
        "classifier_score": classifier_score(fake_p),
        **precision_recall(real_f, fake_f, k=3),
        **density_coverage(real_f, fake_f, k=5),
        "classes_covered": float(coverage["classes_covered"]),
        "class_kl": coverage["kl_to_reference"],
    }


def score_images(fake: Tensor, datamodule: Any, net: FeatureNet, info: dict[str, Any], split: str = "test",
                 num_real: int = 10000, seed: int = 0, floor: bool = True) -> dict[str, Any]:
    """Score fake images in [0, 1] against ``split``; optionally the train-vs-split floor too."""
    target = datamodule.test_dataset if split == "test" else datamodule.train_dataset
    real_x, real_y = take(target, num_real, seed)
    real = embed(net, real_x)
    result: dict[str, Any] = {"metrics": score_features(real, embed(net, fake), real_y, net.num_classes, seed=seed)}
    if floor:
        other = datamodule.train_dataset if split == "test" else datamodule.test_dataset
        floor_x, _ = take(other, min(len(fake), num_real), seed + 1)
        result["floor"] = score_features(real, embed(net, floor_x), real_y, net.num_classes, seed=seed)
    result["protocol"] = {
        "num_fake": len(fake), "num_real": len(real_x), "split": split,
        "floor": f"{'train' if split == 'test' else 'test'} images scored against the {split} split",
        "feature_net": info["dataset"], "feature_net_sha256": info["sha256"],
        "feature_net_test_accuracy": info["test_accuracy"], "precision_recall_k": 3, "density_coverage_k": 5,
        "note": FEATURE_NOTE.format(name=info["dataset"], sha=info["sha256"][:12]),
    }
    return result


def score_points(samples: Tensor, datamodule: Any, num_samples: int = 2500) -> dict[str, Any]:
    """The 2-D mixture protocol on the first ``num_samples`` samples (2,500 in the literature)."""
    stats = mode_statistics(samples[:num_samples].float(), datamodule.modes, datamodule.std)
    return {"metrics": stats, "protocol": {"num_fake": min(len(samples), num_samples), "max_std": 3.0,
                                           "modes": int(datamodule.modes.shape[0]), "std": datamodule.std}}
