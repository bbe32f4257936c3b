"""Inception metrics offline: the standard network's whole path (hash check, weights-only loading,
uint8 quantisation, TensorFlow-1 resize, FID/KID/IS, cached real statistics) run through a randomly
initialised network of the same architecture, since the published weights cannot be downloaded here."""
import warnings

import numpy as np
import pytest
import torch

import evaluate as evaluate_script
import gan_modules.metrics.inception as inception
from gan_modules.metrics import real_stats
from gan_modules.metrics.real_stats import gaussian_statistics, real_features
from gan_modules.metrics.scores import classifier_score, frechet_distance_from_statistics, inception_score
from tests.test_evaluation import digits_uint8


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / inception.INCEPTION_FILE
    return path, inception.save_random_inception(path)


@pytest.fixture
def accept_random_weights(random_weights, monkeypatch):
    """The random file stands in for the published one: only the expected hash is changed."""
    monkeypatch.setattr(inception, "INCEPTION_SHA256", random_weights[1])
    return random_weights[0]


def run_evaluate(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_script.main(argv)


def test_features_are_torch_fidelitys_reference_network_on_uint8_images(random_weights):
    path, sha = random_weights
    net, info = inception.load_inception(path, expected_sha256=sha)
    assert info["sha256"] == sha and "2015-12-05" in info["note"]
    images = torch.rand(3, 1, 28, 28)
    pixels = net.quantise(images)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 28, 28)
    assert torch.equal(pixels[:, 0], pixels[:, 2]) and torch.equal(pixels[:, 0], (images[:, 0] * 255).round().to(torch.uint8))

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                            feature_extractor_weights_path=str(path))
    pool, logits = reference(pixels)
    features = net.features(images)
    assert features.shape == (3, 2048)
    torch.testing.assert_close(features, pool)
    torch.testing.assert_close(net.head(features), logits, rtol=1e-4, atol=1e-4)
    # the antialiased resize torchmetrics uses by default is another filter: other features
    from torchmetrics.image.fid import NoTrainInceptionV3

    antialiased = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(path), antialias=True)
    difference = (antialiased(pixels) - pool).abs().max() / pool.abs().max()
    assert difference > 1e-3


def test_a_wrong_or_missing_weights_file_names_the_file_its_hash_and_where_it_is_published(tmp_path, random_weights):
    with pytest.raises(inception.InceptionWeightsError) as err:
        inception.load_inception(random_weights[0])  # a real network, but not the published weights
    assert inception.INCEPTION_SHA256 in str(err.value) and random_weights[1] in str(err.value)
    with pytest.raises(SystemExit) as err:
        evaluate_script.parse_args(["samples=x.npz", "dataset=digits", "features=inception",
                                    f"inception_weights={tmp_path / 'nowhere.pth'}"])
    message = str(err.value)
    assert inception.INCEPTION_FILE in message and inception.INCEPTION_SHA256 in message
    assert inception.INCEPTION_URL in message and "features=own" in message
    truncated = tmp_path / inception.INCEPTION_FILE
    truncated.write_bytes(random_weights[0].read_bytes()[:1000])
    with pytest.raises(inception.InceptionWeightsError, match="sha256"):
        inception.load_inception(tmp_path)  # a folder holding the file is searched too


def test_the_weights_are_found_in_torch_hubs_cache(tmp_path, monkeypatch, random_weights):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(inception.InceptionWeightsError, match="checkpoints"):
        inception.find_weights()
    (tmp_path / "checkpoints").mkdir()
    alias = tmp_path / "checkpoints" / inception.INCEPTION_FILE_ALIASES[1]
    alias.symlink_to(random_weights[0])
    assert inception.find_weights() == alias


def test_fid_from_statistics_matches_torchmetrics_fid_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    from gan_modules.metrics.scores import _IdentityFeatures

    generator = torch.Generator().manual_seed(0)
    real = torch.randn(400, 32, generator=generator, dtype=torch.float64)
    fake = torch.randn(300, 32, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    metric = FrechetInceptionDistance(feature=_IdentityFeatures(32), normalize=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ours = frechet_distance_from_statistics(*gaussian_statistics(real), *gaussian_statistics(fake))
    assert ours == pytest.approx(float(metric.compute()), rel=1e-6)
    assert frechet_distance_from_statistics(*gaussian_statistics(real), *gaussian_statistics(real)) == \
        pytest.approx(0.0, abs=1e-6)


def test_inception_score_splits_confident_spread_predictions_score_the_class_count():
    eye = torch.eye(10).repeat(10, 1)  # 100 confident predictions, every class 10 times
    mean, std = inception_score(eye, splits=1)
    assert mean == pytest.approx(10.0) and std == 0.0
    mean, _ = inception_score(torch.full((100, 10), 0.1), splits=10)
    assert mean == pytest.approx(1.0)
    probs = torch.softmax(torch.randn(200, 10, generator=torch.Generator().manual_seed(1)) * 3, dim=1)
    mean, std = inception_score(probs, splits=10, seed=0)
    parts = [classifier_score(part) for part in probs[torch.randperm(200, generator=torch.Generator().manual_seed(0))].chunk(10)]
    assert mean == pytest.approx(float(np.mean(parts))) and std == pytest.approx(float(np.std(parts)))
    with pytest.raises(ValueError, match="10 splits"):
        inception_score(probs[:5])


def test_evaluate_with_inception_scores_fid_kid_is_and_caches_the_real_features(tmp_path, accept_random_weights):
    np.savez(tmp_path / "real.npz", digits_uint8(40))
    cache = tmp_path / "cache"
    argv = [f"samples={tmp_path / 'real.npz'}", "dataset=digits", "num_real=30", "features=inception",
            f"inception_weights={accept_random_weights}", f"stats_cache={cache}", "floor=false"]
    first = run_evaluate(argv)
    assert set(first["metrics"]) == {"fid", "kid", "kid_std", "inception_score", "inception_score_std"}
    protocol = first["protocol"]
    assert protocol["features"] == "inception" and protocol["quantisation"] == "uint8"
    assert protocol["real_features_cached"] is False and protocol["num_fake"] == 40
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and "DigitsDataModule-test-30-inception" in files[0].name
    second = run_evaluate(argv)
    assert second["protocol"]["real_features_cached"] is True
    assert second["metrics"] == first["metrics"]
    # the same images scored against themselves give FID ~ 0 (samples = the first 40 of the data)
    flat = tmp_path / "flat.npz"
    np.savez(flat, np.full((40, 8, 8, 1), 128, np.uint8))
    far = run_evaluate([f"samples={flat}", *argv[1:]])
    assert far["protocol"]["real_features_cached"] is True and far["metrics"]["fid"] > first["metrics"]["fid"]


def test_the_paper_protocol_takes_50k_samples_against_the_whole_training_split():
    cfg = evaluate_script.parse_args(["checkpoint=x.ckpt", "protocol=fid50k_full"])
    assert (cfg.num_samples, cfg.split, cfg.num_real, cfg.floor) == (50000, "train", None, False)
    cfg = evaluate_script.parse_args(["checkpoint=x.ckpt", "protocol=fid50k_full", "num_samples=10000"])
    assert cfg.num_samples == 10000  # an option given beside it wins
    for bad, needle in (("protocol=fid10k", "fid50k_full"), ("features=clip", "own, inception"),
                        ("device=gpu0", "not a device")):
        with pytest.raises(SystemExit, match=needle):
            evaluate_script.parse_args(["checkpoint=x.ckpt", bad])
    with pytest.raises(SystemExit, match="only with features=inception"):
        evaluate_script.parse_args(["checkpoint=x.ckpt", "inception_weights=w.pth"])


def test_cached_statistics_are_exact_keyed_and_a_bad_file_is_recomputed(tmp_path):
    calls = []

    def embed(images):
        calls.append(len(images))
        flat = images.flatten(1).double()
        return flat, torch.softmax(flat[:, :3], dim=1)

    images, labels = torch.rand(20, 1, 4, 4), torch.arange(20) % 3
    describe = {"dataset": "Toy", "split": "test", "network": "net", "network_sha256": "ab" * 32}
    first = real_features(images, labels, embed, describe, tmp_path)
    again = real_features(images, labels, embed, describe, tmp_path)
    assert calls == [20] and again.from_cache and not first.from_cache
    for name in ("features", "probs", "labels", "mean", "covariance"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    changed = images.clone()
    changed[3, 0, 1, 1] += 1e-6  # one pixel, one ulp-scale change: another set
    real_features(changed, labels, embed, describe, tmp_path)
    real_features(images, labels, embed, {**describe, "network_sha256": "cd" * 32}, tmp_path)
    assert calls == [20, 20, 20] and len(list(tmp_path.glob("*.npz"))) == 3
    # a truncated file, and a file holding another set's entry under this name: both recomputed, replaced
    path = real_stats.cache_path(tmp_path, real_stats.statistics_key(images, describe))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="Ignoring the cached"):
        assert not real_features(images, labels, embed, describe, tmp_path).from_cache
    assert calls[-1] == 20 and real_features(images, labels, embed, describe, tmp_path).from_cache
    other = real_stats.cache_path(tmp_path, real_stats.statistics_key(changed, describe))
    path.write_bytes(other.read_bytes())
    assert not real_features(images, labels, embed, describe, tmp_path).from_cache
    assert real_features(images, labels, embed, describe, tmp_path).from_cache
    assert len(calls) == 5 and not list(tmp_path.glob(".*.tmp"))


def test_a_large_set_keeps_a_subset_of_features_but_statistics_of_all(tmp_path, monkeypatch):
    monkeypatch.setattr(real_stats, "MAX_KEPT_VALUES", 16 * 10)
    images = torch.rand(40, 1, 4, 4)

    def embed(x):
        return x.flatten(1).double(), torch.ones(len(x), 2) / 2

    entry = real_features(images, torch.zeros(40), embed, {"dataset": "Toy", "split": "train", "network": "n",
                                                           "network_sha256": "0" * 64}, tmp_path)
    assert entry.features.shape == (10, 16)
    mean, covariance = gaussian_statistics(images.flatten(1).double())
    torch.testing.assert_close(entry.mean, mean)
    torch.testing.assert_close(entry.covariance, covariance)


def test_the_quality_callback_scores_in_inception_space_and_reuses_the_cached_real_features(tmp_path, accept_random_weights):
    from gan_modules.training import train
    from tests.conftest import FAST, TINY_DIGITS, compose_train

    cache = tmp_path / "cache"
    overrides = [*FAST, *TINY_DIGITS, "debug=default", "callbacks=quality", "callbacks.quality.every_n_steps=2",
                 "callbacks.quality.num_samples=20", "callbacks.quality.num_real=20",
                 "callbacks.quality.features=inception", f"callbacks.quality.inception_weights={accept_random_weights}",
                 f"callbacks.quality.stats_cache={cache}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = train(compose_train(overrides, tmp_path / "one"))
    assert {"quality/fid", "quality/kid", "quality/inception_score"} <= set(metrics)
    assert "quality/recall" not in metrics  # precision/recall are reported in the own feature space only
    assert len(list(cache.glob("DigitsDataModule-test-20-inception-*.npz"))) == 1
    refused = compose_train([*overrides[:-2], f"callbacks.quality.inception_weights={tmp_path / 'none.pth'}"], tmp_path / "two")
    with pytest.raises(inception.InceptionWeightsError, match="sha256"):
        train(refused)
    assert not (tmp_path / "two" / "checkpoints").exists()  # refused before any training
