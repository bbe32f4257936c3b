"""Score generated samples against a dataset split, in the project's own feature space or Inception's.

Images, own feature network (the default, offline): FID, KID, classifier score, improved
precision/recall (k=3), density/coverage (k=5) and class coverage. Images, the FID Inception network
(``metrics/inception.py``, from a local weights file): FID, KID and IS (10 splits), the numbers papers
report. 2-D toy data: the mode-coverage protocol. Every result carries its protocol and, optionally,
the real-vs-real floor (images of the other split scored in the same way). Real images' features
are cached (``metrics/real_stats.py``).
"""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gan_modules.metrics.features import FeatureNet
from gan_modules.metrics.modes import mode_statistics
from gan_modules.metrics.real_stats import RealFeatures, gaussian_statistics, real_features
from gan_modules.metrics.scores import (
    class_coverage,
    classifier_score,
    density_coverage,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_score,
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
def embed(net: FeatureNet, images: Tensor, batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Features and class probabilities of images in [0, 1] (on the CPU)."""
    batch_size = batch_size or getattr(net, "embed_batch_size", 500)
    feats, probs = [], []
    for chunk in images.split(batch_size):
        f = net.features(chunk.float())
        feats.append(f.cpu())
        probs.append(torch.softmax(net.head(f), dim=1).cpu())
    return torch.cat(feats).double(), torch.cat(probs)


def is_inception(info: dict[str, Any]) -> bool:
    return info.get("name") == "inception"


def network_name(info: dict[str, Any]) -> str:
    return "inception" if is_inception(info) else str(info["dataset"])


def real_set(dataset: Any, description: dict[str, Any], n: int, seed: int, net: Any, info: dict[str, Any],
             cache_dir: str | None) -> RealFeatures:
    """``n`` random images of ``dataset`` (seeded) embedded by ``net``, from the cache when possible."""
    images, labels = take(dataset, n, seed)
    describe = {**description, "network": network_name(info), "network_sha256": info["sha256"]}
    return real_features(images, labels, lambda x: embed(net, x), describe, cache_dir)


def sample_set(net: Any, images: Tensor) -> RealFeatures:
    """Generated images embedded by ``net`` (never cached: they change with every checkpoint)."""
    features, probs = embed(net, images)
    mean, covariance = gaussian_statistics(features)
    return RealFeatures(features, probs, torch.empty(0), mean, covariance)


def score_inception(real: RealFeatures, fake: RealFeatures, seed: int = 0, kid_subset_size: int = 1000,
                    splits: int = 10) -> dict[str, float]:
    """FID (from both sets' Gaussian statistics), KID and the Inception Score (``splits`` parts)."""
    kid_mean, kid_std = kernel_inception_distance(real.features, fake.features, subset_size=kid_subset_size, seed=seed)
    is_mean, is_std = inception_score(fake.probs, splits=splits, seed=seed)
    return {"fid": frechet_distance_from_statistics(real.mean, real.covariance, fake.mean, fake.covariance),
            "kid": kid_mean, "kid_std": kid_std, "inception_score": is_mean, "inception_score_std": is_std}


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


def score_images(fake: Tensor, datamodule: Any, net: Any, info: dict[str, Any], split: str = "test",
                 num_real: int | None = 10000, seed: int = 0, floor: bool = True,
                 cache_dir: str | None = None) -> dict[str, Any]:
    """Score fake images in [0, 1] against ``split`` (``num_real`` images of it; None: all), in the
    feature space of ``net`` (the own network, or Inception: ``info`` says which); optionally the
    other split's images scored the same way (the floor). Real features are cached in ``cache_dir``."""
    datasets = {"test": datamodule.test_dataset, "train": datamodule.train_dataset}
    num_real = len(datasets[split]) if num_real is None else num_real
    description = {"dataset": type(datamodule).__name__}
    real = real_set(datasets[split], {**description, "split": split}, num_real, seed, net, info, cache_dir)
    inception = is_inception(info)

    def score(other: RealFeatures) -> dict[str, float]:
        if inception:
            return score_inception(real, other, seed=seed, kid_subset_size=min(1000, len(other.features)))
        return score_features((real.features, real.probs), (other.features, other.probs), real.labels,
                               net.num_classes, seed=seed)

    result: dict[str, Any] = {"metrics": score(sample_set(net, fake))}
    other_split = "train" if split == "test" else "test"
    if floor:
        result["floor"] = score(real_set(datasets[other_split], {**description, "split": other_split},
                                         min(len(fake), num_real), seed + 1, net, info, cache_dir))
    result["protocol"] = {
        "num_fake": len(fake), "num_real": num_real, "split": split,
        "floor": f"{other_split} images scored against the {split} split",
        "real_features_cached": real.from_cache,
    }
    if inception:
        result["protocol"].update({
            "features": "inception", "inception_sha256": info["sha256"], "resize": "299, TensorFlow 1 bilinear",
            "quantisation": "uint8", "is_splits": 10, "kid_subset_size": min(1000, len(fake), num_real),
            "kid_real_features": len(real.features), "note": info["note"]})
    else:
        result["protocol"].update({
            "features": "own", "feature_net": info["dataset"], "feature_net_sha256": info["sha256"],
            "feature_net_test_accuracy": info["test_accuracy"], "precision_recall_k": 3, "density_coverage_k": 5,
            "note": FEATURE_NOTE.format(name=info["dataset"], sha=info["sha256"][:12])})
    return result


def score_points(samples: Tensor, datamodule: Any, num_samples: int = 2500) -> dict[str, Any]:
    """The 2-D mixture protocol on the first ``num_samples`` samples (2,500 in the literature)."""
    stats = mode_statistics(samples[:num_samples].float(), datamodule.modes, datamodule.std)
    return {"metrics": stats, "protocol": {"num_fake": min(len(samples), num_samples), "max_std": 3.0,
                                           "modes": int(datamodule.modes.shape[0]), "std": datamodule.std}}
