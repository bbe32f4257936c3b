"""Framework overhead: generator steps per second of train.py's GANModule under a Lightning Trainer
against a plain PyTorch loop of the identical models, batch, data and optimizers; peak resident
memory of both.

    python benchmarks/speed.py --recipes default seed_fashion_dcgan --steps 150 --rounds 11

The speed comparison runs in one process (threads pinned): each round times a segment of the
framework and a segment of the plain loop on the same networks, in alternating order, and the ratio
is taken per round. On a shared 2-core machine the step time of the same code differs by up to 25 %
between processes (thread placement, neighbours), far more than the overhead being measured, so
separate processes per side cannot resolve it. Peak memory needs separate processes: one per side.

Prints a markdown table; the ratio is framework / plain (1.0 = no overhead).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"default": [], "seed_fashion_dcgan": ["experiment=seed_fashion_dcgan"]}
WARMUP = 20  # generator steps of each segment not timed (trainer start-up, allocator, loader warm-up)


def build(recipe: str) -> tuple[Any, Any]:
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from gan_modules.build import build_module
    from gan_modules.config import compose_config

    cfg = compose_config([*RECIPES[recipe], "trainer.accelerator=cpu"])
    pl.seed_everything(0, workers=True)
    module, datamodule = build_module(cfg), instantiate(cfg.dataset)
    datamodule.setup("fit")
    return module, datamodule


def time_framework(module: Any, datamodule: Any, steps: int) -> float:
    """Generator steps per second of ``steps`` GANModule steps under a fresh Trainer, after WARMUP."""
    import pytorch_lightning as pl

    marks: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            marks.append(time.perf_counter())

    trainer = pl.Trainer(accelerator="cpu", max_steps=steps * (module.n_critic + 1), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Clock()])
    trainer.fit(module, datamodule=datamodule)
    return (steps - WARMUP) / (marks[-1] - marks[WARMUP - 1])


def time_plain(module: Any, datamodule: Any, steps: int) -> float:
    """The same two-phase update written directly in PyTorch, on the module's networks."""
    import torch

    G, D, loss = module.generator, module.discriminator, module.loss
    opt_g, opt_d = module.optimizer_g(params=G.parameters()), module.optimizer_d(params=D.parameters())
    done, start = 0, 0.0
    while done < steps:
        for real, _ in datamodule.train_dataloader():
            for _ in range(module.n_critic):
                with torch.no_grad():
                    fake = G(torch.randn(real.shape[0], G.z_dim))
                d_loss = loss.d_loss(D(real), D(fake))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            for p in D.parameters():
                p.requires_grad_(False)
            g_loss = loss.g_loss(D(G(torch.randn(real.shape[0], G.z_dim))))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            for p in D.parameters():
                p.requires_grad_(True)
            done += 1
            if done == WARMUP:
                start = time.perf_counter()
            if done == steps:
                break
    return (steps - WARMUP) / (time.perf_counter() - start)


def child_speed(recipe: str, steps: int, rounds: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    module, datamodule = build(recipe)
    records = []
    for i in range(rounds):  # alternate the order so that drift within the process hits both sides
        order = ("framework", "plain") if i % 2 == 0 else ("plain", "framework")
        rates = {side: (time_framework if side == "framework" else time_plain)(module, datamodule, steps)
                 for side in order}
        records.append(rates)
    print(json.dumps(records))


def child_memory(mode: str, recipe: str, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    module, datamodule = build(recipe)
    (time_framework if mode == "framework" else time_plain)(module, datamodule, steps)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(*args: str) -> Any:
    out = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=150, help="generator steps per segment (the first 20 untimed)")
    parser.add_argument("--rounds", type=int, default=7, help="framework/plain segment pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["speed", "framework", "plain"])
    args = parser.parse_args()
    if args.steps <= WARMUP + 1:
        parser.error(f"--steps must exceed the {WARMUP} warm-up steps")
    if args.child == "speed":
        return child_speed(args.recipes[0], args.steps, args.rounds, args.threads)
    if args.child:
        return child_memory(args.child, args.recipes[0], args.steps, args.threads)
    print("| recipe | framework G steps/s | plain G steps/s | ratio, median [min, max] over rounds | "
          "peak RSS framework / plain (MiB) |")
    print("|---|---|---|---|---|")
    common = ["--steps", str(args.steps), "--threads", str(args.threads)]
    for recipe in args.recipes:
        rounds = run_child("--child", "speed", "--recipes", recipe, "--rounds", str(args.rounds), *common)
        ratios = [r["framework"] / r["plain"] for r in rounds]
        fw = statistics.median(r["framework"] for r in rounds)
        plain = statistics.median(r["plain"] for r in rounds)
        mem = [run_child("--child", side, "--recipes", recipe, *common)["peak_rss_mib"] for side in ("framework", "plain")]
        print(f"| {recipe} | {fw:.2f} | {plain:.2f} | {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}] | {mem[0]:.0f} / {mem[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
