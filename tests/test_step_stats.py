"""Per-step figures stay on the device: the callbacks read them in blocks, and a step makes no host read."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from gan_modules.callbacks.guards import NonFiniteTrainingError
from gan_modules.step_stats import PendingSteps, StepStatistics, read_back
from gan_modules.training import train
from tests.conftest import FAST, TINY_DIGITS, compose_train

ROOT = Path(__file__).resolve().parents[1]
PROJECT_DIRS = tuple(str(ROOT / name) + "/" for name in ("gan_modules", "datamodules"))
# Reads of values drawn from the CPU's generator (StyleGAN's style-mixing coin and crossover), which
# never wait for a GPU.
CPU_SIDE_READS = ("stylegan.py:styles",)
# What reads a tensor's values on the host: on a GPU each one waits for the device.
HOST_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


class CountingTolist:
    """Counts ``Tensor.tolist`` calls (the one transfer of a block read)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = torch.Tensor.tolist

        def tolist(tensor):
            self.calls += 1
            return original(tensor)

        monkeypatch.setattr(torch.Tensor, "tolist", tolist)


def test_a_record_is_read_once_and_shared_by_every_reader(monkeypatch):
    counter = CountingTolist(monkeypatch)
    record = StepStatistics({"d_loss": torch.tensor(0.5), "g_loss": torch.tensor(2.0), "d_acc_real": 1}, step=7)
    assert counter.calls == 0 and not record.is_read
    assert record.copy() is record  # what Lightning's manual loop hands the callbacks
    assert isinstance(record, dict) and list(record) == ["d_loss", "g_loss", "d_acc_real"] and len(record) == 3
    assert torch.is_tensor(record["g_loss"]) and record["g_loss"].shape == () and not record.is_read
    assert record.host() == {"d_loss": 0.5, "g_loss": 2.0, "d_acc_real": 1.0}
    assert counter.calls == 1 and record.is_read and record.step == 7
    record.host()
    assert counter.calls == 1


def test_a_block_of_records_is_read_in_one_transfer(monkeypatch):
    counter = CountingTolist(monkeypatch)
    records = [StepStatistics({"d_loss": torch.tensor(float(i)), "g_loss": torch.tensor(-float(i))}, step=i)
               for i in range(1, 6)]
    records[1].host()  # already read by another callback: not read again
    calls = counter.calls
    extra = read_back(records, extra=[torch.tensor(True), torch.tensor(3.5)])
    assert counter.calls == calls + 1
    assert extra == [1.0, 3.5]
    assert [r.host()["g_loss"] for r in records] == [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert read_back(records) == [] and counter.calls == calls + 1  # nothing left to read


def test_pending_steps_is_due_on_multiples_and_wraps_plain_dicts():
    pending = PendingSteps(read_every_n_steps=3)
    due = [pending.add({"loss": torch.tensor(float(step)), "name": "not a number"}, step) for step in range(1, 7)]
    assert due == [False, False, True, False, False, True]
    records, _ = pending.take()
    assert [r.step for r in records] == [1, 2, 3, 4, 5, 6] and [r.host()["loss"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert list(records[0]) == ["loss"] and len(pending) == 0
    assert pending.add(None, 9) is True and len(pending) == 0  # a module that returns nothing
    with pytest.raises(ValueError, match="positive integer"):
        PendingSteps(0)


# The generator step (1-based) whose batch is in progress, 0 outside training; set by StepTag.
IN_PROGRESS = {"step": 0}
PLOTS_SEEN: list = []
EPOCH_ENDS: list = []  # steps at which an epoch ended (the guard reads there, before the checkpoint)


class StepTag(pl.Callback):
    """Test helper: tracks the step in progress, and hands the run's TrainingPlots to the test."""

    def on_train_start(self, trainer, pl_module):
        PLOTS_SEEN[:] = [cb for cb in trainer.callbacks if type(cb).__name__ == "TrainingPlots"]
        EPOCH_ENDS.clear()

    def on_train_epoch_end(self, trainer, pl_module):
        EPOCH_ENDS.append(pl_module.generator_steps_done)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        IN_PROGRESS["step"] = pl_module.generator_steps_done + 1

    def on_train_end(self, trainer, pl_module):
        IN_PROGRESS["step"] = 0


def record_project_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Patch the host-read methods so that calls made during training by the project's own code
    (gan_modules, datamodules) are recorded with the step in progress."""
    reads: list[tuple[int, str]] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def patched(tensor, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            if IN_PROGRESS["step"] > 0 and caller.co_filename.startswith(PROJECT_DIRS):
                reads.append((IN_PROGRESS["step"], f"{_name} in {Path(caller.co_filename).name}:{caller.co_name}"))
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    return reads


RUNS = {
    "dcgan": TINY_DIGITS + ["model=dcgan", "model.generator.base_channels=8", "model.discriminator.base_channels=8"],
    "dcgan_ema": TINY_DIGITS + ["model=dcgan", "model.generator.base_channels=8", "model.discriminator.base_channels=8",
                                "model.ema_decay=0.999"],
    # Lazy R1 and path length on their own steps, ADA adjusting p every 4 steps, EMA.
    "stylegan2_ada": ["experiment=stylegan2_fashion32", "dataset=digits", "dataset.image_size=8", "dataset.batch_size=8",
                      "model.generator.z_dim=8", "model.generator.w_dim=8", "model.generator.channel_base=32",
                      "model.discriminator.channel_base=32", "model.loss.r1_interval=2", "model.loss.pl_interval=3",
                      "augment=ada"],
    # Grown by the callback, with its stage picked on the host at every forward.
    "stylegan_growing": ["experiment=stylegan_fashion32", "dataset.subset=256", "+trainer.enable_checkpointing=false", "model.generator.mapping_layers=2",
                         "callbacks.progressive.fade_in_images=32", "callbacks.progressive.stabilize_images=32",
                         "callbacks.progressive.batch_sizes={default: 8}"],
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_training_steps_make_no_host_read_outside_the_read_schedule(tmp_path, monkeypatch, run):
    every = 5
    overrides = FAST + RUNS[run] + [
        "max_generator_steps=12", "logger=csv", f"trainer.log_every_n_steps={every}",
        f"callbacks.guards.check_every_n_steps={every}",
        f"callbacks.collapse_watch.read_every_n_steps={every}", f"callbacks.training_plots.read_every_n_steps={every}",
        "callbacks.samples.every_n_steps=10", "callbacks.model_checkpoint=null",
        "+callbacks.step_tag._target_=tests.test_step_stats.StepTag",
    ]
    cfg = compose_train(overrides, tmp_path)
    reads = record_project_reads(monkeypatch)
    train(cfg)
    reads = [(step, what) for step, what in reads if not what.endswith(CPU_SIDE_READS)]
    steps_with_reads = {step for step, _ in reads}
    # Reads come on the block steps (5, 10; the sample grid's step 10 too), the last step (12) and
    # where an epoch ends (a growing StyleGAN ends one when its batch size changes).
    # (An epoch ended early is seen from the next batch's start: tagged with the step after.)
    allowed = {5, 10, 12, *EPOCH_ENDS, *(step + 1 for step in EPOCH_ENDS)}
    assert steps_with_reads <= allowed, [r for r in reads if r[0] not in allowed]
    assert len(EPOCH_ENDS) < 4  # the runs are not all epoch ends
    assert 5 in steps_with_reads  # the counter works
    plots = PLOTS_SEEN[0]
    assert plots.history["step"] == [float(s) for s in range(1, 13)] and len(plots.history["d_loss"]) == 12


def test_the_guard_reads_in_blocks_and_names_the_bad_step(tmp_path):
    overrides = FAST + TINY_DIGITS + [
        "model=mlp_small", "max_generator_steps=30", "logger=csv", "callbacks.samples=null",
        "callbacks.training_plots=null", "callbacks.model_checkpoint=null", "callbacks.guards.check_every_n_steps=10",
        "+callbacks.poison._target_=tests.test_guards.PoisonBatch", "+callbacks.poison.at_step=13",
    ]
    with pytest.raises(NonFiniteTrainingError) as info:
        train(compose_train(overrides, tmp_path))
    message = str(info.value)
    assert "Training stopped at generator step 20: generator step 13 went bad: " in message and "d_loss=nan" in message


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_read_intervals_are_refused(value):
    from gan_modules.callbacks.guards import CollapseWatch, NonFiniteGuard
    from gan_modules.callbacks.plots import TrainingPlots

    with pytest.raises(ValueError, match="check_every_n_steps must be a positive integer"):
        NonFiniteGuard(check_every_n_steps=value)
    with pytest.raises(ValueError, match="read_every_n_steps must be a positive integer"):
        CollapseWatch(read_every_n_steps=value)
    with pytest.raises(ValueError, match="read_every_n_steps must be a positive integer"):
        TrainingPlots("unused", read_every_n_steps=value)


def test_the_progress_bar_reads_the_logged_values_once_per_logging_interval(tmp_path, monkeypatch):
    from pytorch_lightning.callbacks import TQDMProgressBar

    reads = []
    original = TQDMProgressBar.get_metrics

    def counting(self, trainer, pl_module):
        reads.append(pl_module.generator_steps_done)
        return original(self, trainer, pl_module)

    monkeypatch.setattr(TQDMProgressBar, "get_metrics", counting)
    overrides = FAST[:1] + TINY_DIGITS + [
        "model=mlp_small", "max_generator_steps=12", "logger=csv", "trainer.log_every_n_steps=4",
        "callbacks.samples=null", "callbacks.model_checkpoint=null", "callbacks.progress_bar.refresh_rate=1",
        "trainer.enable_progress_bar=true",
    ]
    train(compose_train(overrides, tmp_path))
    training_reads = [step for step in reads if 0 < step <= 12]
    # Batches 1-4 show the first interval, 5-8 the values logged at 4, 9-12 those logged at 8.
    assert training_reads[:3] == [1, 5, 9]


def test_a_growing_network_keeps_its_stage_on_the_host_and_follows_a_loaded_state():
    from gan_modules.nets.progan import ProGANGenerator

    grown = ProGANGenerator(out_shape=(1, 16, 16), z_dim=8, channel_base=64, max_channels=8)
    young = ProGANGenerator(out_shape=(1, 16, 16), z_dim=8, channel_base=64, max_channels=8)
    assert (grown.stage_index, grown.alpha_value) == (2, 1.0)  # a new network is fully grown
    young.set_progress(1, 0.25)
    assert (young.stage_index, young.alpha_value, int(young.stage)) == (1, 0.25, 1) and young.fading()
    grown.load_state_dict(young.state_dict())
    assert (grown.stage_index, grown.alpha_value, grown.current_resolution) == (1, 0.25, 8)
    assert grown(torch.randn(2, 8)).shape == (2, 1, 8, 8)


def test_a_record_edited_by_someone_keeps_its_values_with_their_names():
    records = [StepStatistics({"d_loss": torch.tensor(1.0), "g_loss": torch.tensor(2.0)}, step=1),
               StepStatistics({"d_loss": torch.tensor(3.0), "g_loss": torch.tensor(float("nan"))}, step=2)]
    edited = records[0].copy()  # the record itself: Lightning hands the same object to every callback
    edited["mine"] = torch.tensor(9.0)
    edited.pop("d_loss")
    assert read_back(records, extra=[torch.tensor(False)]) == [0.0]
    assert records[0].host() == {"d_loss": 1.0, "g_loss": 2.0}
    assert records[1].host()["d_loss"] == 3.0 and records[1].host()["g_loss"] != records[1].host()["g_loss"]


class SaveWeightsOnly(pl.Callback):
    """Test helper: writes a weights-only checkpoint at the given generator step (mid-block)."""

    def __init__(self, at_step: int, path: str) -> None:
        self.at_step, self.path = at_step, path

    def on_train_batch_end(self, trainer, pl_module, *args):
        if pl_module.generator_steps_done == self.at_step:
            trainer.save_checkpoint(self.path, weights_only=True)


def test_a_weights_only_checkpoint_of_a_bad_step_is_refused(tmp_path):
    # Lightning does not call the callbacks' on_save_checkpoint for weights-only checkpoints; the
    # module hands the guard its look at the unread steps instead.
    target = tmp_path / "weights.ckpt"
    overrides = FAST + TINY_DIGITS + [
        "model=mlp_small", "max_generator_steps=30", "logger=csv", "callbacks.samples=null",
        "callbacks.training_plots=null", "callbacks.model_checkpoint=null",
        "+callbacks.poison._target_=tests.test_guards.PoisonBatch", "+callbacks.poison.at_step=5",
        "+callbacks.save._target_=tests.test_step_stats.SaveWeightsOnly", "+callbacks.save.at_step=7",
        f"+callbacks.save.path={target}",
    ]
    with pytest.raises(NonFiniteTrainingError) as info:
        train(compose_train(overrides, tmp_path / "run"))
    message = str(info.value)
    assert "generator step 5 went bad" in message and "it was not written" in message
    assert not target.exists()
