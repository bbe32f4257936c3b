"""Sample-quality scores computed on precomputed feature vectors and classifier outputs.

Inputs are plain tensors: ``real`` features ``(N, D)``, ``fake`` features ``(M, D)`` (from the
project's own feature network, not Inception), class probabilities ``(M, K)`` or predicted labels
``(M,)``. Everything runs on the CPU in float64 and returns Python floats (or dicts of them).

* FID and KID use torchmetrics' implementations with an identity "feature extractor", so the
  features go in unchanged.
* Improved precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020)
  use k-nearest-neighbour balls around each point, computed with chunked ``torch.cdist`` so
  10k x 10k sets fit in well under 1 GB.
* ``classifier_score`` is the Inception Score formula on our classifier; ``class_coverage`` is a
  histogram of predicted classes against the data's class distribution.
"""
from __future__ import annotations

import warnings
from typing import Iterator

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance  # not torchmetrics.image: needs torch-fidelity
from torchmetrics.image.kid import KernelInceptionDistance

# Elements of one distance block; 2**24 float64 values = 128 MiB, plus a boolean mask of the same shape.
_BLOCK_ELEMENTS = 2**24


class _IdentityFeatures(nn.Module):
    """A torchmetrics 'feature extractor' that returns its (feature) input as float64.

    ``num_features`` tells torchmetrics the feature size, so it does not push a dummy
    299x299 image through the module to find out.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x.to(torch.float64)


def _as_features(x: Tensor, name: str) -> Tensor:
    """A detached float64 CPU copy of a 2-D feature matrix, with a clear error otherwise."""
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (samples, features) tensor, got shape {tuple(x.shape)}.")
    return x.detach().to("cpu", torch.float64)


def _pair(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Both feature sets as float64, checked to share the feature size."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in size: {real.shape[1]} vs {fake.shape[1]}.")
    return real, fake


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula).

    ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)), covariances with the 1/(n-1) estimator.
    Needs at least 2 samples per set.
    """
    real, fake = _pair(real, fake)
    # torchmetrics accumulates sum(x x^T) and subtracts n mu mu^T (one-pass covariance), which loses
    # digits when the mean is large against the spread; FID ignores a common shift, so centre first.
    shift = real.mean(dim=0)
    metric = FrechetInceptionDistance(feature=_IdentityFeatures(real.shape[1]), normalize=False)
    metric.update(real - shift, real=True)
    metric.update(fake - shift, real=False)
    return float(metric.compute())


def frechet_distance_from_statistics(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> float:
    """The FID formula on two Gaussians given by their statistics (e.g. cached real ones):
    ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)).

    The trace of the matrix square root is the sum of the square roots of the eigenvalues of S_a S_b
    (real and non-negative for two covariance matrices, up to rounding, which ``.real`` drops).
    """
    mean_a, mean_b = mean_a.to(torch.float64), mean_b.to(torch.float64)
    cov_a, cov_b = cov_a.to(torch.float64), cov_b.to(torch.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(f"The two sets' statistics differ in size: {tuple(mean_a.shape)} vs {tuple(mean_b.shape)}.")
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


def inception_score(probs: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """The Inception Score (Salimans et al. 2016) as papers report it: ``classifier_score`` on each of
    ``splits`` equal parts of the samples (shuffled with ``seed``), as (mean, std) over the parts. The
    std is the population one (numpy's default, as in the original code and torch-fidelity)."""
    p = probs.detach().to("cpu", torch.float64)
    if p.dim() != 2 or p.shape[0] < splits:
        raise ValueError(f"The Inception Score with {splits} splits needs (N >= {splits}, classes) probabilities, "
                         f"got shape {tuple(p.shape)}.")
    order = torch.randperm(p.shape[0], generator=torch.Generator().manual_seed(seed))
    scores = torch.tensor([classifier_score(part) for part in p[order].chunk(splits)])
    return float(scores.mean()), float(scores.std(unbiased=False))


def kernel_inception_distance(
    real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased squared MMD with the cubic polynomial kernel, as (mean, std) over random subsets.

    ``subset_size`` is clipped to the smaller set, so small inputs work. torchmetrics draws the
    subsets with the global torch RNG; it is seeded with ``seed`` inside ``fork_rng``, so the result
    is repeatable and the caller's RNG state is left untouched.
    """
    real, fake = _pair(real, fake)
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set.")
    with warnings.catch_warnings():  # keeping every feature in memory is the point here, not a surprise
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        metric = KernelInceptionDistance(
            feature=_IdentityFeatures(real.shape[1]), subsets=subsets, subset_size=size, normalize=False
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _row_blocks(rows: int, cols: int) -> Iterator[slice]:
    """Row slices such that one (block, cols) distance matrix stays under _BLOCK_ELEMENTS."""
    step = max(1, _BLOCK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest *other* row of ``x``, shape (N,)."""
    x = _as_features(x, "x")
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} points, got {k}.")
    radii = torch.empty(x.shape[0], dtype=torch.float64)
    for rows in _row_blocks(x.shape[0], x.shape[0]):
        dist = torch.cdist(x[rows], x)
        # k + 1 smallest: the point itself (distance 0) is among them and is skipped
        radii[rows] = dist.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Every point gets a ball of radius = distance to its k-th nearest neighbour in its own set.
    precision = share of fakes inside at least one real ball (fidelity); recall = share of reals
    inside at least one fake ball (diversity). Balls are closed (<=), as in the paper's code.
    """
    real, fake = _pair(real, fake)
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool)
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool)
    for rows in _row_blocks(real.shape[0], fake.shape[0]):
        dist = torch.cdist(real[rows], fake)  # (block of reals, all fakes)
        fake_in_real |= (dist <= real_radii[rows, None]).any(dim=0)
        real_in_fake[rows] = (dist <= fake_radii[None, :]).any(dim=1)
    return {"precision": fake_in_real.double().mean().item(), "recall": real_in_fake.double().mean().item()}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020), on k-NN balls around the real points only.

    density = (1 / (k M)) * sum over fakes of how many real balls contain it (about 1 when fakes
    follow the real distribution; unbounded above). coverage = share of real points whose ball
    holds at least one fake. Balls are open (<), as in the authors' ``prdc`` code.
    """
    real, fake = _pair(real, fake)
    radii = knn_radii(real, k)
    balls_per_fake = torch.zeros(fake.shape[0], dtype=torch.float64)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for rows in _row_blocks(real.shape[0], fake.shape[0]):
        inside = torch.cdist(real[rows], fake) < radii[rows, None]  # (block of reals, all fakes)
        balls_per_fake += inside.sum(dim=0)
        covered[rows] = inside.any(dim=1)
    density = balls_per_fake.sum().item() / (k * fake.shape[0])
    return {"density": density, "coverage": covered.double().mean().item()}


def classifier_score(probs: Tensor, eps: float = 1e-12) -> float:
    """The Inception Score formula on our classifier: exp(E_x KL(p(y|x) || p(y))).

    ``probs`` is (M, K) softmax output; p(y) is its mean over samples. Ranges from 1 (every sample
    gets the same prediction) to K (confident predictions spread evenly over all K classes).
    ``eps`` keeps log(0) finite.
    """
    p = probs.detach().to("cpu", torch.float64)
    marginal = p.mean(dim=0, keepdim=True)
    kl = (p * ((p + eps).log() - (marginal + eps).log())).sum(dim=1)
    return kl.mean().exp().item()


def class_coverage(
    pred_labels: Tensor, num_classes: int, reference: Tensor | None = None, min_share: float = 0.01,
    eps: float = 1e-10,
) -> dict[str, object]:
    """How the generated samples spread over the classes our classifier predicts for them.

    Returns ``shares`` (list of K floats: share of samples per predicted class), ``kl_to_reference``
    = KL(sample || reference) = sum_c q_c log(q_c / r_c), with q the sample class distribution and r
    the reference (the data's class distribution; uniform when None). Both get ``eps`` added and
    are renormalised, so classes missing on either side give a large but finite value.
    ``classes_covered`` counts classes holding at least ``min_share`` of the samples.
    """
    labels = pred_labels.detach().to("cpu").long().reshape(-1)
    if labels.numel() == 0:
        raise ValueError("class_coverage needs at least one predicted label.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"Predicted labels must lie in [0, {num_classes - 1}].")
    shares = torch.bincount(labels, minlength=num_classes).double() / labels.numel()
    ref = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64) if reference is None \
        else reference.detach().to("cpu", torch.float64).reshape(-1)
    if ref.numel() != num_classes:
        raise ValueError(f"reference has {ref.numel()} entries for {num_classes} classes.")
    q = (shares + eps) / (shares + eps).sum()
    r = (ref + eps) / (ref + eps).sum()
    return {
        "shares": shares.tolist(),
        "kl_to_reference": (q * (q / r).log()).sum().item(),
        "classes_covered": int((shares >= min_share).sum()),
        "num_classes": int(num_classes),
    }
