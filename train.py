"""Train a GAN. Every choice is a Hydra override, e.g.

    python train.py model=dcgan loss=hinge dataset=mnist trainer=gpu model.optimizer.d.lr=1e-4

The run folder (logs/<task_name>/runs/<time>/) receives config.yaml (resolved), checkpoints/,
samples/, plots/ and the loggers' files. A config or file that cannot work stops with one line that
names it and the fix (HYDRA_FULL_ERROR=1 shows the traceback too).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gan_modules.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from gan_modules.errors import report_user_errors
    from gan_modules.training import train
    from gan_modules.preflight import optimized_value

    with report_user_errors("train.py"):
        metrics = train(cfg)
        # A sweeper (e.g. Optuna) optimises the value returned here: the metric named by optimized_metric.
        return optimized_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    import sys

    from gan_modules.config import moved_key_message

    message = moved_key_message(sys.argv[1:])
    if message is not None:
        raise SystemExit(f"train.py: error: {message}")
    main()
