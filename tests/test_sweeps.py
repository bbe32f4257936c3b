"""Hydra sweeps through the CLI: a 2-trial Optuna search on two parallel joblib processes; the SLURM
launcher config composes."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.conftest import FAST, ROOT, TINY_DIGITS

TINY = FAST + TINY_DIGITS + ["debug=default", "model=mlp_small", "callbacks.samples=null",
                             "callbacks.training_plots=null"]


# Two processes on a 2-core machine: one torch thread each, or they spin against each other.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

def test_two_trial_optuna_sweep_on_the_local_parallel_launcher(tmp_path):
    args = [sys.executable, "train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra/launcher=local",
            "hydra.sweeper.n_jobs=2", *TINY, f"hydra.sweep.dir={tmp_path}"]
    result = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    # dataset.batch_size=16 on the command line pins that search dimension; the learning rates are searched
    assert set(results["best_params"]) == {"model.optimizer.g.lr", "model.optimizer.d.lr"}
    # the best value is the final g_loss of the job that ran the best parameters
    best = None
    for job in jobs:
        config = yaml.safe_load((tmp_path / job / "config.yaml").read_text())
        assert config["optimized_metric"] == "g_loss" and (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
        if config["model"]["optimizer"]["g"]["lr"] == results["best_params"]["model.optimizer.g.lr"]:
            best = job
    assert best is not None
    rows = (tmp_path / best / "csv" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert abs(float(last[header.index("g_loss")]) - results["best_value"]) < 1e-6


def test_slurm_launcher_config_composes_with_one_job_per_run():
    result = subprocess.run([sys.executable, "train.py", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                             "--cfg", "hydra", "--package", "hydra.launcher"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = yaml.safe_load(result.stdout)  # the hydra.launcher package alone
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["nodes"] == 1 and launcher["tasks_per_node"] == 1
