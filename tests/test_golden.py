"""Golden runs: a refactor of the training loop must change no number.

Each run trains 20 generator steps (training batches for an autoencoder) on the CPU with seed 0 and
is compared with a record made by the code before the refactor: every step's statistics, and a
fingerprint (sum and sum of squares, in float64) of every tensor of the final state dict.

Record again only for a change that is meant to change numbers, and say so in the commit:
    python tests/test_golden.py --record
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gan_modules.config import compose_config  # noqa: E402
from gan_modules.training import train  # noqa: E402

RECORDS = Path(__file__).resolve().parent / "golden"
STEPS = 20
COMMON = ["seed=0", f"max_generator_steps={STEPS}", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# name -> the overrides of the run. The record keeps the command it was made with; when a refactor
# renames a config key, the overrides here change and the numbers must not.
RUNS: dict[str, list[str]] = {
    "default": [],
    "wgan_gp_layer_norm": ["experiment=wgan_gp", "model.discriminator.norm=layer"],
    "acgan": ["model=cgan_dcgan_acgan"],
    "projection_hinge_r1": ["model=cgan_dcgan_projection", "loss=hinge", "model.loss.r1_weight=5"],
    "replay": ["callbacks=replay"],
    "stylegan_tiny": ["experiment=stylegan_fashion32", "model.generator.mapping_layers=2",
                      "callbacks.progressive.fade_in_images=64", "callbacks.progressive.stabilize_images=64",
                      "callbacks.progressive.batch_sizes={default: 8}"],
    "vae": ["model=vae"],
}


class StepRecorder(pl.Callback):
    """Keeps every training step's statistics, as the module returned them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(outputs, dict):
            self.steps.append({k: float(v) for k, v in outputs.items()})


def run(name: str, output_dir: Path) -> dict:
    """Train run ``name`` into ``output_dir``; its per-step statistics and final weight fingerprint."""
    cfg = compose_config(COMMON + RUNS[name] + [f"paths.output_dir={output_dir}"], "train")
    recorder = StepRecorder()
    module_holder: dict = {}

    class KeepModule(pl.Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            module_holder["module"] = pl_module

    from gan_modules import training

    original = training.instantiate_all

    def with_recorders(group):  # train() instantiates the callbacks first, then the loggers
        found = original(group)
        if not module_holder.get("added"):
            module_holder["added"] = True
            found += [recorder, KeepModule()]
        return found

    training.instantiate_all = with_recorders
    try:
        train(cfg)
    finally:
        training.instantiate_all = original
    state = module_holder["module"].state_dict()
    fingerprint = {
        key: [float(t.double().sum()), float(t.double().pow(2).sum())]
        for key, t in state.items() if torch.is_tensor(t) and t.is_floating_point()
    }
    return {"command": " ".join(RUNS[name]), "steps": recorder.steps, "weights": fingerprint}


def _close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-5) -> bool:
    return math.isfinite(a) == math.isfinite(b) and (not math.isfinite(a) or abs(a - b) <= abs_ + rel * abs(b))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_refactor_changes_no_number(name, tmp_path):
    record = json.loads((RECORDS / f"{name}.json").read_text())
    result = run(name, tmp_path / name)
    assert len(result["steps"]) == len(record["steps"]) == STEPS
    for step, (got, want) in enumerate(zip(result["steps"], record["steps"]), start=1):
        assert set(got) == set(want), f"step {step}: statistics {sorted(got)} != recorded {sorted(want)}"
        bad = {k: (got[k], want[k]) for k in want if not _close(got[k], want[k])}
        assert not bad, f"step {step}: {bad}"
    assert set(result["weights"]) == set(record["weights"])
    bad = {k: (v, record["weights"][k]) for k, v in result["weights"].items()
           if not all(_close(a, b) for a, b in zip(v, record["weights"][k]))}
    assert not bad, f"final weights differ: {dict(list(bad.items())[:5])}"


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--record"]:
        raise SystemExit("usage: python tests/test_golden.py --record")
    RECORDS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for run_name in RUNS:
            data = run(run_name, Path(tmp) / run_name)
            (RECORDS / f"{run_name}.json").write_text(json.dumps(data, indent=1) + "\n")
            print(run_name, "recorded:", len(data["steps"]), "steps,", len(data["weights"]), "tensors")
