"""AC-GAN: the auxiliary classifier discriminator and its class term in both players' losses."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gan_modules.gan as gan
import gan_modules.objectives as objectives
from gan_modules.losses import auxiliary_class_loss
from gan_modules.nets.conditional import AuxiliaryClassifierDiscriminator, is_conditional
from gan_modules.nets.dcgan import DCGANDiscriminator
from gan_modules.nets.mlp import MLPDiscriminator
from gan_modules.objectives import GANLoss
from gan_modules.training import train
from generate import main as generate_main
from tests.conftest import FAST, TINY_DIGITS, compose_train

K = 10
SHAPE = [1, 8, 8]
TINY_ACGAN = ["model=cgan_dcgan_acgan", "model.generator.backbone.z_dim=16", "model.generator.backbone.base_channels=8",
              "model.discriminator.backbone.base_channels=8", "callbacks.samples=null"]


@pytest.mark.parametrize("backbone", [functools.partial(DCGANDiscriminator, base_channels=8),
                                      functools.partial(MLPDiscriminator, hidden=[16])], ids=["dcgan", "mlp"])
def test_the_logit_ignores_the_label_and_the_class_head_reads_the_same_features(backbone):
    d = AuxiliaryClassifierDiscriminator(backbone, SHAPE, K, spectral_norm=True).eval()
    assert is_conditional(d) and d.num_classes == K
    assert torch.nn.utils.parametrize.is_parametrized(d.class_head, "weight")  # spectral_norm reaches the head
    x, y = torch.randn(6, *SHAPE), torch.arange(6)
    out = d(x, y)
    logit, classes = out.logits, out.class_logits
    assert logit.shape == (6,) and classes.shape == (6, K)
    torch.testing.assert_close(logit, d.backbone(x).logits)
    torch.testing.assert_close(d(x, y).logits, d(x, (y + 1) % K).logits)  # the real/fake judgement is unconditional
    torch.testing.assert_close(classes, d.class_head(d.backbone.features(x)))
    torch.testing.assert_close(out.features, d.backbone.features(x))


def test_the_class_loss_trains_the_head_and_the_features_below_it():
    d = AuxiliaryClassifierDiscriminator(functools.partial(DCGANDiscriminator, base_channels=8), SHAPE, K)
    x, y = torch.randn(6, *SHAPE), torch.arange(6)
    classes = d(x).class_logits
    loss = auxiliary_class_loss(classes, y)
    torch.testing.assert_close(loss, F.cross_entropy(classes, y))
    loss.backward()
    first_conv = d.backbone.net[0]
    assert d.class_head.weight.grad.abs().sum() > 0 and first_conv.weight.grad.abs().sum() > 0
    # the real/fake layer is not on the class term's path
    assert d.backbone.net[-1].weight.grad is None


def test_bad_class_weights_and_backbones_are_refused():
    with pytest.raises(ValueError, match="class_weight must be > 0"):
        GANLoss(class_weight=0.0)
    with pytest.raises(TypeError, match="auxiliary classifier.*features"):
        AuxiliaryClassifierDiscriminator(torch.nn.Linear(64, 1), SHAPE, K)


@pytest.mark.parametrize("classify_fakes, d_terms, loss", [
    (False, 1, []), (True, 2, ["loss=hinge", "model.loss.r1_weight=1.0", "model.discriminator.backbone.norm=layer"])])
def test_each_step_adds_the_class_term_with_the_batch_labels(classify_fakes, d_terms, loss, tmp_path, monkeypatch):
    calls: list[tuple[bool, torch.Tensor]] = []

    def spy(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append((torch.is_grad_enabled() and class_logits.requires_grad, labels.clone()))
        return auxiliary_class_loss(class_logits, labels)

    batch_labels: list[torch.Tensor] = []
    training_step = gan.GANModule.training_step

    def record_batch(self, batch, batch_idx):
        batch_labels.append(batch[1].clone())
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(objectives, "auxiliary_class_loss", spy)
    monkeypatch.setattr(gan.GANModule, "training_step", record_batch)
    cfg = compose_train([*FAST, *TINY_DIGITS, *TINY_ACGAN, "debug=default", "max_generator_steps=2",
                         f"model.loss.classify_fakes={classify_fakes}", *loss], tmp_path)
    metrics = train(cfg)
    assert metrics["generator_steps"] == 2
    for key in ("d_class_loss", "g_class_loss", "d_class_acc_real", *(["r1_penalty"] if loss else [])):
        assert np.isfinite(metrics[key]), key
    assert len(calls) == 2 * (d_terms + 1)  # per step: D's term(s), then G's
    assert all(differentiable for differentiable, _ in calls)
    for step in range(2):
        step_calls = calls[step * (d_terms + 1):(step + 1) * (d_terms + 1)]
        assert all(torch.equal(labels, batch_labels[step]) for _, labels in step_calls)  # the real batch's labels


def test_classifying_replayed_fakes_is_refused_before_training(tmp_path):
    cfg = compose_train([*FAST, *TINY_DIGITS, *TINY_ACGAN, "debug=default", "max_generator_steps=2",
                         "model.loss.classify_fakes=true", "callbacks=replay"], tmp_path)
    with pytest.raises(ValueError, match="classify_fakes=false or callbacks.replay=null"):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_an_acgan_checkpoint_samples_the_requested_classes(tmp_path):
    train(compose_train([*FAST, *TINY_DIGITS, *TINY_ACGAN, "debug=default", "max_generator_steps=2"], tmp_path))
    out = generate_main([f"checkpoint={tmp_path / 'checkpoints' / 'last.ckpt'}", "labels=[2,5]", "num_samples=3",
                         f"output={tmp_path / 's.npz'}"])
    assert np.load(out)["labels"].tolist() == [2, 2, 2, 5, 5, 5]
