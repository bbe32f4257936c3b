"""Train a GAN. Every choice is a Hydra override, e.g.

    python train.py model=dcgan loss=wgan_gp dataset=mnist trainer=gpu optimizer.d.lr=1e-4

The run folder (logs/<task_name>/runs/<time>/) receives config.yaml (resolved), checkpoints/,
samples/, plots/ and the loggers' files.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from gan_modules.training import train
    from gan_modules.validation import optimized_value

    metrics = train(cfg)
    # A sweeper (e.g. Optuna) optimises the value returned here: the metric named by optimized_metric.
    return optimized_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
