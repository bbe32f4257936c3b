"""Framework overhead: generator steps per second of train.py's GANModule against a plain PyTorch
loop of the identical model, batch, data and optimizers, each in its own process (threads
pinned), alternating, repeated; peak resident memory of both.

    python benchmarks/speed.py --recipes default seed_fashion_dcgan --steps 400 --repeats 3

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

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"default": [], "seed_fashion_dcgan": ["experiment=seed_fashion_dcgan"]}
WARMUP = 50  # generator steps not timed (allocator and data-loader warm-up)


def build(recipe: str):
    from hydra.utils import instantiate

    from gan_modules.build import build_module
    from gan_modules.config import compose_config

    cfg = compose_config([*RECIPES[recipe], "trainer.accelerator=cpu"])
    import pytorch_lightning as pl

    pl.seed_everything(0, workers=True)
    return cfg, build_module(cfg), instantiate(cfg.dataset)


def time_framework(recipe: str, steps: int) -> float:
    import pytorch_lightning as pl

    cfg, module, datamodule = build(recipe)
    marks: dict[str, float] = {}

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if int(pl_module.generator_steps) == WARMUP:
                marks["start"] = time.perf_counter()

    trainer = pl.Trainer(accelerator="cpu", max_steps=steps * (module.n_critic + 1), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Clock()])
    trainer.fit(module, datamodule=datamodule)
    return (steps - WARMUP) / (time.perf_counter() - marks["start"])


def time_plain(recipe: str, steps: int) -> float:
    """The same two-phase update written directly in PyTorch."""
    import torch

    cfg, module, datamodule = build(recipe)
    G, D, loss = module.generator, module.discriminator, module.loss
    opt_g, opt_d = module.optimizer_g(params=G.parameters()), module.optimizer_d(params=D.parameters())
    datamodule.setup("fit")
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


def child(mode: str, recipe: str, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    rate = (time_framework if mode == "framework" else time_plain)(recipe, steps)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps_per_s": rate, "peak_rss_mib": peak_mib}))


def measure(mode: str, recipe: str, steps: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--recipes", recipe, "--steps", str(steps),
                          "--threads", str(threads)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["framework", "plain"])
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.recipes[0], args.steps, args.threads)
    print("| recipe | framework G steps/s | plain G steps/s | ratio | peak RSS framework / plain (MiB) |")
    print("|---|---|---|---|---|")
    for recipe in args.recipes:
        runs = {"framework": [], "plain": []}
        for i in range(args.repeats):  # alternate the order so drift hits both sides
            for mode in (("framework", "plain") if i % 2 == 0 else ("plain", "framework")):
                runs[mode].append(measure(mode, recipe, args.steps, args.threads))
        fw = statistics.median(r["steps_per_s"] for r in runs["framework"])
        plain = statistics.median(r["steps_per_s"] for r in runs["plain"])
        mem = [max(r["peak_rss_mib"] for r in runs[m]) for m in ("framework", "plain")]
        print(f"| {recipe} | {fw:.2f} | {plain:.2f} | {fw / plain:.3f} | {mem[0]:.0f} / {mem[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
