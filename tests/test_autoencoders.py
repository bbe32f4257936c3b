"""Autoencoders: tied weights, denoising, the VAE's KL term, greedy layer-wise training, the CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from gan_modules.autoencoder import AutoencoderModule, gaussian_kl
from gan_modules.build import build_module, validate_setup
from gan_modules.checkpoints import load_encoder, load_generator
from gan_modules.nets.autoencoders import VAE, ConvAutoencoder, StackedAutoencoder
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train

# The picture callbacks stay on (they are part of what runs), with few points for t-SNE.
AE_FAST = FAST + TINY_DIGITS + ["callbacks.codings_map.num_points=40"]


def adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def test_tied_decoder_shares_the_encoder_weights():
    net = StackedAutoencoder([1, 8, 8], hidden=[20, 5], tied=True)
    untied = StackedAutoencoder([1, 8, 8], hidden=[20, 5], tied=False)
    for enc, dec in zip(net.encoder.linears, net.decoder_linears):
        assert dec.weight.data_ptr() == enc.weight.data_ptr()  # the same storage, transposed
        assert dec.weight.shape == enc.weight.t().shape
    assert not any(k.startswith("decoder_linears") and k.endswith("weight") for k in net.state_dict())
    n_weights = sum(layer.weight.numel() for layer in net.encoder.linears)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in net.parameters()) == n_weights
    # a reconstruction loss reaches the shared weight through both halves
    net(torch.rand(4, 1, 8, 8)).sum().backward()
    assert net.encoder.linears[0].weight.grad is not None
    w = net.encoder.linears[0].weight
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(net.decoder_linears[0].weight, w.t())


@pytest.mark.parametrize("kind", ["gaussian", "dropout"])
def test_denoising_corruption_only_in_training(kind):
    torch.manual_seed(0)
    net = StackedAutoencoder([1, 8, 8], hidden=[16], corruption=kind, corruption_amount=0.5)
    x = torch.rand(6, 1, 8, 8)
    net.eval()
    clean = net.decode(net.encoder(x))
    assert torch.equal(net(x), clean) and torch.equal(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x), clean)  # the input was corrupted


def test_vae_kl_matches_the_closed_form():
    mean, log_var = torch.randn(5, 3), torch.randn(5, 3)
    expected = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(dim=1)
    assert torch.allclose(gaussian_kl(mean, log_var), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_vae_samples_codings_in_training_and_uses_the_mean_in_eval():
    vae = VAE([1, 8, 8], hidden=[16], z_dim=3)
    x = torch.rand(4, 1, 8, 8)
    vae.eval()
    recon, mean, _ = vae(x)
    assert torch.equal(recon, vae.decoder(mean)) and torch.equal(vae.encoder(x), mean)
    vae.train()
    assert not torch.equal(vae(x)[0], recon)


@pytest.mark.parametrize("size", [8, 28, 32])
def test_conv_autoencoder_restores_the_image_size(size):
    net = ConvAutoencoder([1, size, size], channels=[4, 8, 8])
    assert net(torch.rand(2, 1, size, size)).shape == (2, 1, size, size)


@pytest.mark.parametrize("network", [
    StackedAutoencoder([1, 8, 8], hidden=[32, 8]),
    StackedAutoencoder([1, 8, 8], hidden=[32, 8], tied=True),
    ConvAutoencoder([1, 8, 8], channels=[8, 8]),
    VAE([1, 8, 8], hidden=[32], z_dim=4),
])
def test_reconstruction_loss_falls_on_a_tiny_dataset(network):
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    x = torch.as_tensor(load_digits().images[:64], dtype=torch.float32).unsqueeze(1) / 16.0
    module = AutoencoderModule(network, adam)
    optimizer = module.configure_optimizers()
    first = float(module.losses(x)["loss"].detach())
    for _ in range(60):
        optimizer.zero_grad()
        module.losses(x)["loss"].backward()
        optimizer.step()
    assert float(module.losses(x)["loss"].detach()) < 0.8 * first


def test_greedy_stage_trains_only_its_shallow_autoencoder():
    net = StackedAutoencoder([1, 8, 8], hidden=[16, 4])
    module = AutoencoderModule(net, adam, layerwise_epochs=1)
    module._shallow_loss(torch.rand(8, 1, 8, 8), stage=1).backward()
    assert net.encoder.linears[0].weight.grad is None and net.decoder_linears[0].weight.grad is None
    assert net.encoder.linears[1].weight.grad is not None and net.decoder_linears[1].weight.grad is not None


def test_greedy_training_needs_a_stacked_autoencoder():
    with pytest.raises(ValueError, match="stacked autoencoder"):
        AutoencoderModule(VAE([1, 8, 8]), adam, layerwise_epochs=1)


@pytest.mark.parametrize("overrides", [["model=stacked_ae"], ["model=stacked_ae", "model.network.tied=true"],
                                       ["model=conv_ae"], ["model=denoising_ae"], ["model=vae"],
                                       ["experiment=greedy_stacked_ae", "trainer.max_epochs=3"]])
def test_every_autoencoder_config_composes_and_runs(overrides, tmp_path):
    # experiment configs set the dataset too, so the tiny settings come after them
    cfg = compose_train(overrides + AE_FAST + ["max_generator_steps=null", "+trainer.limit_train_batches=2",
                                               "+trainer.limit_val_batches=1"] + (
        [] if "experiment" in overrides[0] else ["trainer.max_epochs=1"]), tmp_path)
    metrics = train(cfg)
    assert np.isfinite(metrics["loss"]) and "val/reconstruction" in metrics
    assert (tmp_path / "samples" / "reconstructions.png").is_file()
    assert (tmp_path / "samples" / "interpolation.png").is_file()
    assert (tmp_path / "plots" / "codings_tsne.png").is_file()
    assert (tmp_path / "samples" / "final.png").is_file() == (overrides == ["model=vae"])  # prior samples


def test_greedy_run_moves_through_the_stages(tmp_path):
    cfg = compose_train(["experiment=greedy_stacked_ae", *AE_FAST, "+trainer.limit_train_batches=2",
                         "+trainer.limit_val_batches=1", "trainer.log_every_n_steps=1"], tmp_path)
    train(cfg)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    stages = [float(r.split(",")[header.index("stage")]) for r in rows[1:] if r.split(",")[header.index("stage")]]
    assert stages == [0.0, 0.0, 1.0, 1.0]  # two batches per epoch; epochs 3-4 train the whole stack


def test_autoencoder_setup_errors_name_the_fix():
    cfg = compose_train(["model=stacked_ae", *TINY_DIGITS, "model.data_range=[-1.0,1.0]"])
    from hydra.utils import instantiate

    with pytest.raises(ValueError, match="reconstruction=bce needs data in"):
        validate_setup(build_module(cfg), instantiate(cfg.dataset))
    with pytest.raises(ValueError, match="at least 16 pixels"):
        ConvAutoencoder([1, 8, 8], channels=[4, 4, 4, 4])


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("vae")
    result = run(["train.py", "model=vae", *AE_FAST, "debug=default", f"hydra.run.dir={run_dir}", "callbacks=quality",
                  "callbacks.quality.every_n_steps=2", "callbacks.quality.num_samples=64", "callbacks.quality.num_real=64"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_generate_and_evaluate_sample_the_vae_prior(vae_run, tmp_path):
    ckpt = vae_run / "checkpoints" / "last.ckpt"
    assert (vae_run / "checkpoints" / "best.ckpt").is_file()  # the quality callback scored the prior's samples
    assert "quality/fid" in (vae_run / "csv" / "metrics.csv").read_text().splitlines()[0]
    out = tmp_path / "vae.npz"
    result = run(["generate.py", f"checkpoint={ckpt}", "num_samples=5", f"output={out}", "seed=1"])
    assert result.returncode == 0, result.stderr[-3000:]
    decoder, _ = load_generator(ckpt)
    z = torch.randn(5, decoder.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (decoder(z) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(np.load(out)["arr_0"], expected)
    result = run(["evaluate.py", f"checkpoint={ckpt}", "num_samples=200", "num_real=200", "floor=false"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"fid"' in result.stdout and "not Inception" in result.stdout


def test_encoder_reuse_for_a_classifier(vae_run):
    encoder = load_encoder(vae_run / "checkpoints" / "last.ckpt")
    classifier = nn.Sequential(encoder, nn.Linear(encoder.out_features, 10))
    assert classifier(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    trained = torch.load(vae_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(classifier[0].mean.weight, trained["network.encoder.mean.weight"])
    assert any(p is classifier[0].mean.weight for p in classifier.parameters())  # fine-tuned with it


def test_plain_autoencoder_cannot_generate(tmp_path):
    cfg = compose_train(["model=stacked_ae", *AE_FAST, "debug=default", "callbacks.interpolation=null",
                         "callbacks.codings_map=null"], tmp_path)
    train(cfg)
    result = run(["generate.py", f"checkpoint={tmp_path / 'checkpoints' / 'last.ckpt'}"])
    assert result.returncode != 0 and "model=vae" in result.stderr


@pytest.mark.parametrize("override, expected", [
    ("loss=hinge", "has no adversarial loss"), ("optimizer=adam", "one optimizer: drop optimizer=")])
def test_gan_groups_are_refused_for_an_autoencoder(override, expected, tmp_path):
    result = run(["train.py", "model=stacked_ae", *AE_FAST, "debug=fdr", override, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 1 and expected in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
