"""Known-answer tests for the feature-space scores and the 2-D mode statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from datamodules.toy2d import mixture_modes, sample_mixture
from gan_modules.metrics import scores
from gan_modules.metrics.modes import mode_statistics, reverse_kl_to_uniform
from gan_modules.metrics.scores import (
    class_coverage, classifier_score, density_coverage, frechet_distance, kernel_inception_distance,
    knn_radii, precision_recall,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra OpenMP threads only add overhead, and stall badly on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The FID formula written out with numpy / scipy's matrix square root."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(cov_x @ cov_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * root))


# --- FID --------------------------------------------------------------------------------------
def test_fid_known_answers():
    a = gaussian(3000, 8, seed=0)
    d = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-6
    # same covariance, means apart by d: exactly ||d||^2; a scaled copy c*a: (1-c)^2 (||mu||^2 + Tr S)
    assert frechet_distance(a, a + d) == pytest.approx(d.square().sum().item(), rel=1e-6)
    mu, cov = a.mean(0), torch.cov(a.T)
    assert frechet_distance(a, 2 * a) == pytest.approx((mu.square().sum() + cov.trace()).item(), rel=1e-6)


def test_fid_independent_draws_and_reference():
    a, b = gaussian(4000, 8, seed=1), gaussian(4000, 8, seed=2)
    d = torch.full((8,), 0.5, dtype=torch.float64)
    assert frechet_distance(a, b) < 0.05  # same distribution: only sampling noise
    shifted = frechet_distance(a, b + d)
    assert abs(shifted - d.square().sum().item()) < 0.3  # ||d||^2 = 2; cross-term noise ~0.06 std
    assert shifted == pytest.approx(reference_fid(a.numpy(), (b + d).numpy()), rel=1e-3)
    skewed = (b * torch.linspace(0.5, 2.0, 8, dtype=torch.float64)).float()  # float32 in, covariance differs
    assert frechet_distance(a.float(), skewed) == pytest.approx(
        reference_fid(a.float().double().numpy(), skewed.double().numpy()), rel=1e-3)


def test_fid_ignores_a_common_offset():
    # torchmetrics' one-pass covariance loses digits under a large mean; the wrapper centres first
    a, b = gaussian(2000, 8, seed=12), gaussian(2000, 8, seed=13)
    assert frechet_distance(a + 1e6, b + 1e6) == pytest.approx(frechet_distance(a, b), rel=1e-6)


# --- KID --------------------------------------------------------------------------------------
def poly_mmd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the KID kernel (x.y / D + 1)^3 on the full sets."""
    k = lambda u, v: (u @ v.T / x.shape[1] + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * k(x, y).mean())


def test_kid_matches_full_set_mmd_when_subset_is_everything():
    a, b = gaussian(300, 8, seed=3), gaussian(300, 8, seed=4, shift=0.5)
    mean, std = kernel_inception_distance(a, b, subsets=5, subset_size=1000)  # clipped to 300
    assert mean == pytest.approx(poly_mmd_reference(a.numpy(), b.numpy()), rel=1e-6)
    assert std < 1e-9  # every "subset" is a permutation of the full sets


def test_kid_same_vs_shifted_and_seeded():
    a, b = gaussian(600, 8, seed=5), gaussian(600, 8, seed=6)
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05 and shifted > 1.0
    first = kernel_inception_distance(a, b, subsets=10, subset_size=100, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert kernel_inception_distance(a, b, subsets=10, subset_size=100, seed=7) == first
    assert kernel_inception_distance(a, b, subsets=10, subset_size=100, seed=8) != first
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone


# --- k-NN radii, precision / recall, density / coverage -----------------------------------------
LINE_REAL = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
LINE_FAKE = torch.tensor([[1.5], [10.0], [-0.5]])


def test_knn_radii_skip_the_point_itself():
    assert knn_radii(LINE_REAL, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(LINE_REAL, 2).tolist() == [3.0, 2.0, 3.0, 5.0]


def test_hand_worked_line_example_and_chunking(monkeypatch):
    # real balls (k=1): 0+-1, 1+-1, 3+-2, 6+-3; 1.5 and -0.5 fall inside, 10 does not
    expected_pr = {"precision": 2 / 3, "recall": 1.0}
    # fakes lie in 2, 0 and 1 open real balls -> density 3 / 3; the ball around 6 holds no fake
    expected_dc = {"density": 1.0, "coverage": 0.75}
    for block in (scores._BLOCK_ELEMENTS, 1):  # one block, then one row per block
        monkeypatch.setattr(scores, "_BLOCK_ELEMENTS", block)
        assert precision_recall(LINE_REAL, LINE_FAKE, k=1) == pytest.approx(expected_pr)
        assert density_coverage(LINE_REAL, LINE_FAKE, k=1) == pytest.approx(expected_dc)


def two_clusters(n: int, seed: int) -> torch.Tensor:
    """n points around (-10, 0, ...) then n points around (+10, 0, ...), D = 4."""
    x = gaussian(2 * n, 4, seed)
    x[:n, 0] -= 10.0
    x[n:, 0] += 10.0
    return x


def test_precision_recall_known_answers():
    real = two_clusters(300, seed=9)
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(real, real + 100.0) == {"precision": 0.0, "recall": 0.0}
    assert precision_recall(real, real[:300]) == {"precision": 1.0, "recall": 0.5}
    half = two_clusters(300, seed=10)[:300]  # a fresh draw from one cluster only
    pr = precision_recall(real, half)
    assert pr["precision"] > 0.9 and 0.4 < pr["recall"] <= 0.5


def test_density_coverage_known_answers():
    real = two_clusters(300, seed=11)
    assert density_coverage(real, real) == pytest.approx({"density": 1.0, "coverage": 1.0})
    modes, std = mixture_modes("ring")
    real, labels = sample_mixture(modes, std, 1600, seed=0)
    fake, _ = sample_mixture(modes[:4], std, 800, seed=1)  # drops modes 4..7
    dc = density_coverage(real, fake)
    kept_share = (labels < 4).double().mean().item()  # real points from the kept modes, ~0.5
    assert abs(kept_share - 0.5) < 0.05 and dc["coverage"] == pytest.approx(kept_share, abs=0.03)
    # within the kept modes fakes follow the real density, so density stays ~1: only coverage sees the drop
    assert dc["density"] == pytest.approx(1.0, abs=0.15)


# --- classifier score, class coverage -----------------------------------------------------------
def test_classifier_score_known_answers():
    assert classifier_score(torch.eye(10).repeat(7, 1)) == pytest.approx(10.0, rel=1e-6)
    assert classifier_score(torch.tensor([[0.2, 0.3, 0.5]]).repeat(50, 1)) == pytest.approx(1.0, abs=1e-9)
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    marginal = p.mean(0)
    kl = [sum(pi * math.log(pi / mi) for pi, mi in zip(row, marginal) if pi > 0) for row in p]
    assert classifier_score(torch.tensor(p)) == pytest.approx(math.exp(np.mean(kl)), rel=1e-6)


def test_class_coverage_known_answers():
    collapsed = class_coverage(torch.full((500,), 3), 10)
    assert collapsed["classes_covered"] == 1 and collapsed["shares"][3] == 1.0
    assert collapsed["kl_to_reference"] == pytest.approx(math.log(10), abs=1e-6)
    uniform = class_coverage(torch.arange(1000) % 10, 10)
    assert uniform["classes_covered"] == 10 and uniform["num_classes"] == 10
    assert uniform["shares"] == pytest.approx([0.1] * 10) and abs(uniform["kl_to_reference"]) < 1e-9
    ref = torch.tensor([0.7, 0.2, 0.1])
    matching = class_coverage(torch.tensor([0] * 7 + [1] * 2 + [2]), 3, reference=ref)
    assert abs(matching["kl_to_reference"]) < 1e-9
    # direction: KL(sample || reference) is log 2 here; the reverse would blow up on the empty class
    one_of_two = class_coverage(torch.zeros(10, dtype=torch.long), 2, reference=torch.tensor([0.5, 0.5]))
    assert one_of_two["kl_to_reference"] == pytest.approx(math.log(2), abs=1e-6)
    assert class_coverage(torch.tensor([0] * 995 + [1] * 5), 2, min_share=0.01)["classes_covered"] == 1


# --- 2-D mode statistics --------------------------------------------------------------------------
def test_perfect_ring_sampler():
    modes, std = mixture_modes("ring")
    samples, _ = sample_mixture(modes, std, 2500, seed=0)
    stats = mode_statistics(samples, modes, std)
    assert stats["modes_captured"] == 8 and stats["num_modes"] == 8 and stats["num_samples"] == 2500
    # |x - mode| / std is chi with 2 dof: P(<= 3) = 1 - exp(-4.5) = 0.9889; binomial std over
    # 2,500 samples is 0.0021, so +-0.01 is ~5 std
    assert stats["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert stats["reverse_kl"] < 0.01  # multinomial noise alone gives about (K - 1) / (2 n) = 0.0014
    assert sum(stats["per_mode_counts"]) == round(stats["high_quality"] * 2500)


def test_perfect_grid_sampler():
    modes, std = mixture_modes("grid")
    stats = mode_statistics(sample_mixture(modes, std, 2500, seed=1)[0], modes, std)
    assert stats["modes_captured"] == 25 and stats["high_quality"] > 0.97 and stats["reverse_kl"] < 0.03


def test_collapsed_and_off_target_samplers():
    modes, std = mixture_modes("ring")
    two, _ = sample_mixture(modes[[0, 4]], std, 2500, seed=2)
    stats = mode_statistics(two, modes, std)
    assert stats["modes_captured"] == 2
    assert [i for i, c in enumerate(stats["per_mode_counts"]) if c] == [0, 4]
    assert stats["reverse_kl"] == pytest.approx(math.log(4), abs=0.01)
    far = mode_statistics(torch.full((100, 2), 5.0), modes, std)
    assert far["modes_captured"] == 0 and far["high_quality"] == 0.0 and far["reverse_kl"] == math.inf


def test_high_quality_threshold_is_euclidean_max_std():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    # distances 0.29 and 0.31 along the diagonal, std 0.1, threshold 0.3
    points = torch.tensor([[0.29 / math.sqrt(2)] * 2, [0.31 / math.sqrt(2)] * 2])
    stats = mode_statistics(points, modes, std=0.1)
    assert stats["high_quality"] == 0.5 and stats["per_mode_counts"] == [1, 0]
    assert reverse_kl_to_uniform(torch.tensor([5, 5, 0, 0])) == pytest.approx(math.log(2))
