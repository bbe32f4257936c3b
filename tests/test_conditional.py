"""Conditional GANs: the wrapper networks, training on labelled data, sampling chosen classes."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_modules.checkpoints import load_generator
from gan_modules.nets.conditional import (
    ConditionalDiscriminator,
    ConditionalGenerator,
    ProjectionDiscriminator,
    conditioning_classes,
)
from gan_modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_modules.nets.mlp import MLPDiscriminator, MLPGenerator
from gan_modules.training import train
from generate import main as generate_main
from tests.conftest import FAST, TINY_DIGITS, compose_train

K = 10
SHAPE = [1, 8, 8]
TINY_CGAN = ["model.generator.backbone.z_dim=16", "model.generator.backbone.base_channels=8",
             "model.discriminator.backbone.base_channels=8"]


def labels(n: int = 6) -> torch.Tensor:
    return torch.arange(n) % K


def generators() -> list[ConditionalGenerator]:
    return [
        ConditionalGenerator(DCGANGenerator(SHAPE, z_dim=16, base_channels=8), K),  # a built module
        ConditionalGenerator(functools.partial(MLPGenerator, SHAPE, z_dim=16, hidden=[32]), K),  # a factory
    ]


@pytest.mark.parametrize("generator", generators(), ids=["dcgan", "mlp"])
def test_conditional_generator_shape_and_the_label_changes_the_output(generator):
    generator.eval()
    z = torch.randn(6, 16)
    out = generator(z, labels())
    assert out.shape == (6, *SHAPE) and generator.num_classes == K and generator.z_dim == 16
    assert generator.out_shape == tuple(SHAPE) and generator.output_range == (-1.0, 1.0)
    other = generator(z, (labels() + 1) % K)
    assert not torch.allclose(out, other)  # same z, other class: other samples


@pytest.mark.parametrize("backbone", [functools.partial(DCGANDiscriminator, base_channels=8),
                                      functools.partial(MLPDiscriminator, hidden=[32])], ids=["dcgan", "mlp"])
def test_concat_discriminator_gives_its_backbone_one_label_channel(backbone):
    d = ConditionalDiscriminator(backbone, SHAPE, K).eval()
    assert tuple(d.backbone.in_shape) == (2, 8, 8)  # the image's channel plus the label's H x W channel
    x = torch.randn(6, *SHAPE)
    logits = d(x, labels()).logits
    assert logits.shape == (6,)
    assert not torch.allclose(logits, d(x, (labels() + 3) % K).logits)


def test_concat_discriminator_on_vector_data_appends_one_entry_per_entry():
    d = ConditionalDiscriminator(functools.partial(MLPDiscriminator, hidden=[16]), [2], 8)
    assert tuple(d.backbone.in_shape) == (4,)
    assert d(torch.randn(5, 2), torch.arange(5)).logits.shape == (5,)


@pytest.mark.parametrize("options", [{}, {"minibatch_stddev": True, "spectral_norm": True},
                                     {"minibatch_discrimination": {"num_kernels": 4, "kernel_dim": 3}}])
def test_backbone_features_and_logit_compose_to_forward(options):
    x = torch.randn(4, *SHAPE)
    for net in (DCGANDiscriminator(SHAPE, base_channels=8, **options), MLPDiscriminator(SHAPE, hidden=[16], **options)):
        net.eval()
        features = net.features(x)
        assert features.shape == (4, net.feature_dim)
        out = net(x)
        torch.testing.assert_close(net.logit(features), out.logits)
        torch.testing.assert_close(features, out.features)  # the structured output carries them


def test_projection_discriminator_is_the_backbone_plus_a_label_projection():
    d = ProjectionDiscriminator(functools.partial(DCGANDiscriminator, base_channels=8, norm="none"), SHAPE, K).eval()
    x, y = torch.randn(6, *SHAPE), labels()
    logits = d(x, y).logits
    assert logits.shape == (6,)
    phi = d.backbone.features(x)
    torch.testing.assert_close(logits, d.backbone(x).logits + (d.label_embedding(y) * phi).sum(1))
    assert not torch.allclose(logits, d(x, (y + 1) % K).logits)  # the output depends on y


def test_projection_needs_a_backbone_with_features():
    with pytest.raises(TypeError, match="features"):
        ProjectionDiscriminator(torch.nn.Linear(64, 1), SHAPE, K)


def test_conditional_and_unconditional_nets_do_not_mix():
    g = generators()[0]
    with pytest.raises(ValueError, match="unconditional"):
        conditioning_classes(g, DCGANDiscriminator(SHAPE, base_channels=8))
    with pytest.raises(ValueError, match="10 classes.*3 classes|same num_classes"):
        conditioning_classes(g, ConditionalDiscriminator(functools.partial(MLPDiscriminator, hidden=[8]), SHAPE, 3))
    with pytest.raises(ValueError, match="labelled"):
        ConditionalGenerator(DCGANGenerator(SHAPE, z_dim=16, base_channels=8), None)


# --- training ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory) -> Path:
    """A tiny conditional DCGAN trained for 5 generator steps on the digits (with an EMA of G), scored
    by the quality callback on the way."""
    out = tmp_path_factory.mktemp("cgan")
    cfg = compose_train([*FAST, *TINY_DIGITS, "debug=default", "model=cgan_dcgan", *TINY_CGAN, "model.ema_decay=0.9",
                         "callbacks=quality", "callbacks.quality.every_n_steps=2", "callbacks.quality.num_samples=64",
                         "callbacks.quality.num_real=64"], out)
    metrics = train(cfg)
    assert metrics["generator_steps"] == 5 and "quality/fid" in metrics
    return out


def test_conditional_training_writes_one_class_per_grid_column(cgan_run):
    width, _ = Image.open(cgan_run / "samples" / "final.png").size
    assert width == K * (8 + 2) + 2  # K images of 8 px with 2 px padding: one column per class
    assert (cgan_run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("overrides", [
    ["model=cgan_mlp", "loss=wgan_gp", "model.generator.backbone.hidden=[32]", "model.discriminator.backbone.hidden=[32]"],
    ["model=cgan_dcgan_projection", "loss=hinge", "model.loss.r1_weight=1.0", *TINY_CGAN],
], ids=["mlp-gradient-penalty", "projection-r1"])
def test_conditional_training_with_penalties_feeds_d_the_same_labels_for_real_and_fake(overrides, tmp_path,
                                                                                       monkeypatch):
    import gan_modules.training as training

    cfg = compose_train([*FAST, *TINY_DIGITS, "debug=default", "max_generator_steps=2", "callbacks.samples=null",
                         *overrides], tmp_path)
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        if module.training:  # not validate_setup's check before training
            seen.append((args[1] if len(args) > 1 else kwargs["y"]).clone())

    def build_and_spy(cfg_):
        module = build_module(cfg_)
        module.discriminator.register_forward_pre_hook(record, with_kwargs=True)
        return module

    build_module = training.build_module
    monkeypatch.setattr(training, "build_module", build_and_spy)
    metrics = train(cfg)
    assert metrics["generator_steps"] == 2 and np.isfinite(metrics["d_loss"])
    assert all(int(y.min()) >= 0 and int(y.max()) < K for y in seen)
    # a D step sees the real batch, then fakes with the same labels, then the penalty's input
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])


def test_conditional_model_on_unlabelled_data_stops_before_training(tmp_path):
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / f"{i}.png")
    base = [*FAST, "debug=default", "model=cgan_dcgan", *TINY_CGAN, "dataset=image_folder", f"dataset.root={tmp_path}",
            "dataset.channels=1", "dataset.image_size=8", "dataset.batch_size=2", "dataset.labels=none"]
    with pytest.raises(ValueError, match="needs labelled data.*dataset.num_classes"):
        train(compose_train(base, tmp_path / "run1"))
    # num_classes declared by hand, but the folder has no labels: validate_setup refuses it
    with pytest.raises(ValueError, match="unlabelled data.*needs labelled data"):
        train(compose_train([*base, "dataset.num_classes=3"], tmp_path / "run2"))
    assert not (tmp_path / "run1" / "checkpoints").exists() and not (tmp_path / "run2" / "checkpoints").exists()


def test_class_count_must_match_the_data(tmp_path):
    with pytest.raises(ValueError, match="set dataset.num_classes=10"):
        train(compose_train([*FAST, *TINY_DIGITS, "debug=default", "model=cgan_mlp", "dataset.num_classes=4"], tmp_path))


# --- sampling ---------------------------------------------------------------------------------
def test_generate_samples_the_requested_labels_in_order(cgan_run, tmp_path):
    ckpt = cgan_run / "checkpoints" / "last.ckpt"
    out = generate_main([f"checkpoint={ckpt}", "labels=[0,3,7]", "num_samples=4", f"output={tmp_path / 's.npz'}",
                         f"grid={tmp_path / 'g.png'}", "grid_size=6"])
    data = np.load(out)
    assert data["arr_0"].shape == (12, 8, 8, 1)
    assert data["labels"].tolist() == [0] * 4 + [3] * 4 + [7] * 4
    width, height = Image.open(tmp_path / "g.png").size
    assert (width, height) == (2 * 10 + 2, 3 * 10 + 2)  # rows = the 3 classes, grid_size // 3 = 2 columns


def test_evaluate_scores_a_conditional_checkpoint_on_every_class(cgan_run):
    from evaluate import samples_from_checkpoint

    fake, _ = samples_from_checkpoint(str(cgan_run / "checkpoints" / "last.ckpt"), 30, seed=0)
    assert fake.shape == (30, *SHAPE)


def test_same_z_other_label_gives_other_images(cgan_run):
    generator, _ = load_generator(cgan_run / "checkpoints" / "last.ckpt")
    z = torch.randn(4, generator.z_dim)
    with torch.no_grad():
        a, b = generator(z, torch.full((4,), 3)), generator(z, torch.full((4,), 7))
    assert not torch.allclose(a, b)


def test_class_grid_rows_are_latents_and_columns_classes(cgan_run, tmp_path):
    path = generate_main([f"checkpoint={cgan_run / 'checkpoints' / 'last.ckpt'}", f"class_grid={tmp_path / 'c.png'}",
                          "class_grid_rows=3", "labels=[1,2,5,9]"])
    assert Image.open(path).size == (4 * 10 + 2, 3 * 10 + 2)


@pytest.mark.parametrize("args, match", [
    (["labels=[0,10]"], r"Labels \[10\] are out of range.*0 to 9"),
    (["labels=[-1]"], "out of range|whole numbers >= 0"),
    (["labels=[0]", "class_grid=x.png", "interpolate=[1,2]"], "one of"),
])
def test_generate_refuses_bad_label_requests(cgan_run, args, match):
    with pytest.raises(SystemExit, match=match):
        generate_main([f"checkpoint={cgan_run / 'checkpoints' / 'last.ckpt'}", *args])
