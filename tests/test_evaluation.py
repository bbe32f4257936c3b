"""The shipped feature networks, evaluate.py on tiny npz files, the quality callback, EMA."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import gan_modules.metrics.features as features
from gan_modules.metrics.features import load_feature_net
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train


@pytest.mark.parametrize("name", ["fashion_mnist", "digits"])
def test_shipped_feature_networks_load_and_match_their_hash(name):
    net, info = load_feature_net(name)
    assert info["sha256"] == features.file_sha256(features.WEIGHTS_DIR / f"{name}.pt")
    assert info["test_accuracy"] > 0.85
    x = torch.rand(3, 1, info["architecture"]["input_size"], info["architecture"]["input_size"])
    assert net.features(x).shape == (3, net.num_features) and net(x).shape == (3, 10)


def test_a_changed_weight_file_is_refused(tmp_path, monkeypatch):
    for suffix in (".pt", ".json"):
        shutil.copy(features.WEIGHTS_DIR / f"digits{suffix}", tmp_path / f"digits{suffix}")
    data = bytearray((tmp_path / "digits.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "digits.pt").write_bytes(bytes(data))
    monkeypatch.setattr(features, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        load_feature_net("digits")
    with pytest.raises(FileNotFoundError, match="train_feature_net"):
        load_feature_net("imagenet")


def evaluate(args, cwd=ROOT):
    result = subprocess.run([sys.executable, "evaluate.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def digits_uint8(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images[:n] / 16.0
    return (images * 255).round().astype(np.uint8)[..., None]


def test_evaluate_real_digits_score_like_real_data_and_a_constant_image_does_not(tmp_path):
    np.savez(tmp_path / "real.npz", digits_uint8(600))
    good = evaluate([f"samples={tmp_path / 'real.npz'}", "dataset=digits", "num_real=300"])
    assert good["protocol"]["feature_net"] == "digits" and "not Inception" in good["protocol"]["note"]
    assert good["metrics"]["classes_covered"] == 10 and good["metrics"]["recall"] > 0.8
    assert good["metrics"]["fid"] < 5 * max(good["floor"]["fid"], 1.0)
    np.savez(tmp_path / "flat.npz", np.full((600, 8, 8, 1), 128, np.uint8))
    bad = evaluate([f"samples={tmp_path / 'flat.npz'}", "dataset=digits", "num_real=300", "floor=false"])
    assert bad["metrics"]["classes_covered"] == 1 and bad["metrics"]["recall"] == 0.0
    assert bad["metrics"]["fid"] > 10 * good["metrics"]["fid"]


def test_evaluate_points_on_the_ring(tmp_path):
    from datamodules.toy2d import mixture_modes, sample_mixture

    modes, std = mixture_modes("ring")
    points, _ = sample_mixture(modes[:2], std, 2500, seed=0)  # a sampler that found 2 of 8 modes
    np.savez(tmp_path / "ring.npz", points.numpy().astype(np.float32))
    result = evaluate([f"samples={tmp_path / 'ring.npz'}", "dataset=toy2d_ring"])
    assert result["metrics"]["modes_captured"] == 2 and result["metrics"]["reverse_kl"] == pytest.approx(np.log(4), abs=0.01)


def test_evaluate_rejects_unknown_options():
    result = subprocess.run([sys.executable, "evaluate.py", "sample=x.npz"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "unknown option" in result.stderr


def test_quality_callback_logs_scores_and_keeps_best_checkpoint(tmp_path):
    cfg = compose_train([*FAST, *TINY_DIGITS, "debug=default", "callbacks=quality", "callbacks.quality.every_n_steps=2",
                         "callbacks.quality.num_samples=64", "callbacks.quality.num_real=64"], tmp_path)
    metrics = train(cfg)
    assert {"quality/fid", "quality/recall", "quality/classes_covered"} <= set(metrics)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["callbacks"]["SampleQuality"]["best"] <= metrics["quality/fid"] + 1e-9


def test_ema_generator_follows_the_average_and_is_what_sampling_uses(tmp_path):
    cfg = compose_train([*FAST, *TINY_DIGITS, "debug=default", "model.ema_decay=0.9", "model=mlp_small"], tmp_path)
    from gan_modules.build import build_module

    module = build_module(cfg)
    expected = [p.detach().clone() for p in module.generator.parameters()]
    update = module.update_ema

    def spy():
        steps = float(module.generator_steps)
        decay = min(0.9, (1 + steps) / (10 + steps))
        for e, live in zip(expected, module.generator.parameters()):
            e.mul_(decay).add_(live.detach(), alpha=1 - decay)
        update()

    module.update_ema = spy
    from hydra.utils import instantiate

    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, max_steps=10)
    trainer.fit(module, datamodule=instantiate(cfg.dataset))
    for e, p in zip(expected, module.generator_ema.parameters()):
        assert torch.allclose(e, p, atol=1e-6)
    assert not torch.equal(expected[0], module.generator.net[0].weight)
    assert module.sampling_generator is module.generator_ema


def test_evaluate_crop_scores_padded_samples_like_the_unpadded_ones(tmp_path):
    from evaluate import main as evaluate_main

    digits = digits_uint8(400)
    np.savez(tmp_path / "plain.npz", digits)
    np.savez(tmp_path / "padded.npz", np.pad(digits, ((0, 0), (2, 2), (2, 2), (0, 0))))  # 12x12, as ProGAN's data
    common = ["dataset=digits", "num_real=200", "floor=false"]
    plain = evaluate_main([f"samples={tmp_path / 'plain.npz'}", *common])
    cropped = evaluate_main([f"samples={tmp_path / 'padded.npz'}", "crop=8", *common])
    assert cropped["metrics"] == plain["metrics"] and cropped["protocol"]["crop"] == 8
    with pytest.raises(SystemExit, match="crop=16"):
        evaluate_main([f"samples={tmp_path / 'padded.npz'}", "crop=16", *common])
