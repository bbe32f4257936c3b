"""The phase objectives: terms with a weight and an interval (lazy regularisation), terms from the config."""
from __future__ import annotations

import pytest
import torch

from gan_modules.losses import r1_penalty
from gan_modules.nets.mlp import MLPDiscriminator, MLPGenerator
from gan_modules.objectives import GANLoss, Pass, Term
from gan_modules.training import train
from tests.conftest import FAST, compose_train


class MeanFakeScore(Term):
    """A test term: D's mean score on the fakes, reported as ``mean_fake_score``."""

    name = "mean_fake_score"

    def value(self, p: Pass) -> torch.Tensor:
        return p.fake_out.logits.mean()


class GeneratorOutputSize(Term):
    """A test term of the generator phase: the mean squared fake."""

    phase, name = "generator", "fake_size"

    def value(self, p: Pass) -> torch.Tensor:
        return p.fake.pow(2).mean()


def critic_and_batches():
    torch.manual_seed(0)
    d = MLPDiscriminator((4,), hidden=[8])
    return d, torch.randn(6, 4), torch.randn(6, 4)


@pytest.mark.parametrize("interval", [1, 3])
def test_lazy_r1_is_applied_every_kth_step_and_multiplied_by_k(interval):
    d, real, fake = critic_and_batches()
    plain = GANLoss("hinge").discriminator_objective
    lazy = GANLoss("hinge", r1_weight=2.0, r1_interval=interval).discriminator_objective
    r1 = r1_penalty(lambda x: d(x).logits, real)
    for step in range(2 * interval + 1):
        base, _ = plain(d, real, fake, None, step)
        total, stats = lazy(d, real, fake, None, step)
        expected = 2.0 * interval * r1 if step % interval == 0 else torch.zeros(())
        torch.testing.assert_close(total - base, expected)
        # Every step reports the latest value, so that the statistics do not come and go.
        torch.testing.assert_close(stats["r1_penalty"], r1.detach())


def test_a_lazy_term_skipped_at_the_first_step_still_reports_its_value():
    d, real, fake = critic_and_batches()
    objective = GANLoss("hinge", r1_weight=1.0, r1_interval=4).discriminator_objective
    base, _ = GANLoss("hinge").discriminator_objective(d, real, fake, None, 5)
    total, stats = objective(d, real, fake, None, 5)  # a run resumed between two applications
    torch.testing.assert_close(total, base)  # not applied off schedule
    torch.testing.assert_close(stats["r1_penalty"], r1_penalty(lambda x: d(x).logits, real).detach())


def test_terms_from_the_config_join_their_phase():
    d, real, fake = critic_and_batches()
    loss = GANLoss("non_saturating", terms=[MeanFakeScore(0.5), GeneratorOutputSize(0.1, interval=2)])
    base, _ = GANLoss("non_saturating").discriminator_objective(d, real, fake, None, 0)
    total, stats = loss.discriminator_objective(d, real, fake, None, 0)
    torch.testing.assert_close(total - base, 0.5 * d(fake).logits.mean())
    assert "mean_fake_score" in stats and "fake_size" not in stats
    torch.manual_seed(1)
    g = MLPGenerator((4,), z_dim=3, hidden=[8])
    z = torch.randn(6, 3)
    g_total, g_stats = loss.generator_objective(g, d, z, None, 0)
    torch.testing.assert_close(g_total - g_stats["g_loss"], 0.1 * 2 * g(z).pow(2).mean())


@pytest.mark.parametrize("bad, match", [({"weight": -1.0}, "weight must be a number >= 0"),
                                        ({"weight": 1.0, "interval": 0}, "interval must be an integer >= 1"),
                                        ({"weight": 1.0, "interval": 2.5}, "interval must be an integer >= 1")])
def test_bad_term_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        MeanFakeScore(**bad)


def test_loss_terms_refuse_what_is_not_a_term():
    with pytest.raises(TypeError, match="model.loss.terms takes Term objects"):
        GANLoss(terms=[torch.nn.Linear(1, 1)])


@pytest.mark.parametrize("n_critic, interval", [(1, 4), (2, 3)])
def test_lazy_r1_schedule_counts_discriminator_steps_in_training(n_critic, interval, tmp_path, monkeypatch):
    import gan_modules.objectives as objectives

    calls = []

    def counting_r1(critic, real):
        calls.append(1)
        return r1_penalty(critic, real)

    monkeypatch.setattr(objectives, "r1_penalty", counting_r1)
    steps = 6
    cfg = compose_train([*FAST, "model=mlp_toy", "dataset=toy2d_ring", "dataset.batch_size=16", "callbacks.samples=null", "callbacks.training_plots=null",
                         f"max_generator_steps={steps}", f"model.n_critic={n_critic}", "model.loss.r1_weight=1.0",
                         f"model.loss.r1_interval={interval}"], tmp_path)
    metrics = train(cfg)
    assert metrics["generator_steps"] == steps
    d_steps = steps * n_critic
    assert len(calls) == len(range(0, d_steps, interval))


def test_a_config_term_trains_end_to_end(tmp_path):
    term = "{_target_: tests.test_objectives.MeanFakeScore, weight: 0.1}"
    cfg = compose_train([*FAST, "model=mlp_toy", "dataset=toy2d_ring", "dataset.batch_size=16", "callbacks.samples=null", "callbacks.training_plots=null",
                         "max_generator_steps=3", f"model.loss.terms=[{term}]", "trainer.log_every_n_steps=1"], tmp_path)
    metrics = train(cfg)
    assert "mean_fake_score" in metrics and torch.isfinite(torch.tensor(metrics["mean_fake_score"]))


def test_bad_r1_interval_is_a_config_error(tmp_path):
    from gan_modules.preflight import ConfigError, validate_config

    with pytest.raises(ConfigError, match="model.loss.r1_interval"):
        validate_config(compose_train(["model.loss.r1_interval=0"], tmp_path))


def test_a_lazy_terms_latest_value_travels_in_the_checkpoint(tmp_path, monkeypatch):
    """Resumed between two applications, the run reports R1's saved value and does not evaluate it."""
    import gan_modules.objectives as objectives

    base = [*FAST, "model=mlp_toy", "dataset=toy2d_ring", "dataset.batch_size=16", "callbacks.samples=null",
            "callbacks.training_plots=null", "model.loss.r1_weight=1.0", "model.loss.r1_interval=3",
            "dataset.num_samples=64", "trainer.log_every_n_steps=1"]
    train(compose_train([*base, "trainer.max_epochs=1"], tmp_path))  # steps 0-3: R1 at 0 and 3
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["loss_term_statistics"]
    (r1_statistics,) = [s for s in saved.values() if "r1_penalty" in s]
    calls = []
    monkeypatch.setattr(objectives, "r1_penalty", lambda *args: calls.append(1) or torch.tensor(0.0))
    metrics = train(compose_train([*base, "trainer.max_epochs=2", "ckpt_path=auto"], tmp_path))
    assert calls == [1]  # steps 4-7: applied at 6 only, not evaluated at 4 for the statistic alone
    assert metrics["generator_steps"] == 8 and "r1_penalty" in metrics
    assert r1_statistics["r1_penalty"].item() > 0
