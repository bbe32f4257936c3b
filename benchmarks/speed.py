"""Framework overhead and the speed options: images per second of train.py's GANModule under a
Lightning Trainer against a plain PyTorch loop of the identical models, batch, data and optimizers,
and peak memory of each.

    python benchmarks/speed.py --recipes default seed_fashion_dcgan --steps 150 --rounds 11
    python benchmarks/speed.py --device cuda --recipes default_b64 default_b256 stylegan2_64 \\
        --variants framework on_device on_device_compile --steps 300 --rounds 5
    python benchmarks/speed.py --epoch default --variants framework on_device on_device_compile

Every framework side runs with the default callbacks that look at every step (NaN guard, collapse
watch, training plots), which read the steps' figures in blocks of ``--read-every`` steps (50, as in
train.py); compare ``--read-every 1`` to see what a host read per step costs.

Sides of one comparison (``--variants``; the plain loop always runs):
    framework          the DataLoader (dataset.on_device=false) and eager networks, as before these options
    on_device          dataset.on_device=true: the training split as one tensor on the device
    on_device_compile  on_device plus model.compile=true
    channels_last      on_device_compile plus model.channels_last=true
    on_device_channels_last  on_device plus model.channels_last=true, eager
``--extra`` adds overrides to every framework side (e.g. trainer.precision=bf16-mixed).

The speed comparison runs in one process (threads pinned): each round times a segment of every side
on networks built from the same seed, in rotating order, and the ratios are taken per round. On a
shared 2-core machine the step time of the same code differs by up to 25 % between processes
(thread placement, neighbours), far more than the overhead being measured, so separate processes
per side cannot resolve it. On a GPU the clock is read after ``torch.cuda.synchronize()`` at the
start and end of the timed part only. Peak memory needs separate processes, one per side: resident
memory on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU.

``--sync-check RECIPE`` (CUDA only) trains each framework side with the default per-step callbacks
(NaN guard, collapse watch, plots) and ``torch.cuda.set_sync_debug_mode("error")`` switched on for
whole steps (from the previous step's callbacks to this step's), except next to the steps where they
read their block (every 50): any host sync in a step stops it with the line that made it. ``--replay``
adds the experience replay buffer, whose buffer lives on the device.

``--epoch RECIPE`` instead times one whole epoch (``trainer.max_epochs=1``) of each side, in its own
process, Trainer start-up included: the wall time a user waits.

Prints markdown tables: images/s (generator steps/s times the batch), then the ratios with their
median [min, max] over rounds.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECIPES = {
    "default": [],
    "default_b64": ["dataset.batch_size=64"],
    "default_b256": ["dataset.batch_size=256"],
    "seed_fashion_dcgan": ["experiment=seed_fashion_dcgan"],
    # The GPU recipe's networks at 64x64, on Fashion-MNIST scaled to 64 (no image folder needed). R1,
    # path length and EMA are off: the plain loop has the main loss terms only, and compile refuses
    # the double backward of R1 and path length.
    "stylegan2_64": ["experiment=stylegan2_folder64", "dataset=fashion_mnist", "dataset.image_size=64",
                     "dataset.resize=interpolate", "dataset.num_workers=0", "model.loss.r1_weight=0",
                     "model.loss.pl_weight=0", "model.ema_decay=null"],
}
VARIANTS = {
    "framework": ["dataset.on_device=false"],
    "on_device": ["dataset.on_device=true"],
    "on_device_compile": ["dataset.on_device=true", "model.compile=true"],
    "channels_last": ["dataset.on_device=true", "model.compile=true", "model.channels_last=true"],
    "on_device_channels_last": ["dataset.on_device=true", "model.channels_last=true"],
}
READ_EVERY = 50  # the per-step callbacks' block (--read-every)
WARMUP = 20  # generator steps of each segment not timed (trainer start-up, allocator, compile, loader warm-up)


def build(recipe: str, variant: str, device: str, extra: list[str]) -> tuple[Any, Any, Any]:
    """The side's module and datamodule from the recipe's config, seeded alike, and its precision."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from gan_modules.build import build_module
    from gan_modules.config import compose_config

    overrides = [*RECIPES[recipe], f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"]
    if variant != "plain":
        overrides += [*VARIANTS[variant], *extra]
    cfg = compose_config(overrides)
    pl.seed_everything(0, workers=True)
    module, datamodule = build_module(cfg), instantiate(cfg.dataset)
    datamodule.setup("fit")
    return module, datamodule, cfg.trainer.get("precision", "32-true")


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_framework(module: Any, datamodule: Any, precision: Any, steps: int, device: str) -> float:
    """Generator steps per second of ``steps`` GANModule steps under a fresh Trainer, after WARMUP."""
    import pytorch_lightning as pl

    marks: dict[str, float] = {}

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            done = pl_module.generator_steps_done - first
            if done in (WARMUP, steps):
                synchronize(device)
                marks["start" if done == WARMUP else "end"] = time.perf_counter()

    first = int(module.generator_steps)
    with tempfile.TemporaryDirectory() as plots:
        trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                             max_steps=steps * (module.n_critic + 1), logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[*per_step_callbacks(plots), Clock()])
        trainer.fit(module, datamodule=datamodule)
    return (steps - WARMUP) / (marks["end"] - marks["start"])


def per_step_callbacks(plots_dir: str) -> list[Any]:
    """The default callbacks that look at every step (train.py's callbacks=default), reading in blocks
    of READ_EVERY steps."""
    from gan_modules.callbacks.guards import CollapseWatch, NonFiniteGuard
    from gan_modules.callbacks.plots import TrainingPlots

    return [NonFiniteGuard(check_every_n_steps=READ_EVERY), CollapseWatch(read_every_n_steps=READ_EVERY),
            TrainingPlots(plots_dir, read_every_n_steps=READ_EVERY)]


def time_plain(module: Any, datamodule: Any, precision: Any, steps: int, device: str) -> float:
    """The same two-phase update written directly in PyTorch, on the module's networks."""
    import torch

    from gan_modules.losses import LOSSES
    from gan_modules.nets.conditional import call_discriminator, call_generator

    G, D, loss = module.generator.to(device), module.discriminator.to(device), LOSSES[module.loss.kind]
    opt_g, opt_d = module.optimizer_g(params=G.parameters()), module.optimizer_d(params=D.parameters())
    done, start = 0, 0.0
    while done < steps:
        for real, _ in datamodule.train_dataloader():
            real = real.to(device, non_blocking=True)
            for _ in range(module.n_critic):
                with torch.no_grad():
                    fake = call_generator(G, torch.randn(real.shape[0], G.z_dim, device=device), None)
                d_loss = loss.d_loss(call_discriminator(D, real, None).logits, call_discriminator(D, fake, None).logits)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            for p in D.parameters():
                p.requires_grad_(False)
            fake = call_generator(G, torch.randn(real.shape[0], G.z_dim, device=device), None)
            g_loss = loss.g_loss(call_discriminator(D, fake, None).logits)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            for p in D.parameters():
                p.requires_grad_(True)
            done += 1
            if done in (WARMUP, steps):
                synchronize(device)
                if done == WARMUP:
                    start = time.perf_counter()
            if done == steps:
                break
    return (steps - WARMUP) / (time.perf_counter() - start)


def time_side(side: str, built: tuple[Any, Any, Any], steps: int, device: str) -> float:
    timer = time_plain if side == "plain" else time_framework
    return timer(*built, steps, device)


def child_speed(recipe: str, variants: list[str], steps: int, rounds: int, threads: int, device: str,
                extra: list[str]) -> None:
    import torch

    torch.set_num_threads(threads)
    sides = ["plain", *variants]
    built = {side: build(recipe, side, device, extra) for side in sides}  # own networks: compile works in place
    records = []
    for i in range(rounds):  # rotate the order so that drift within the process hits every side
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        records.append({side: time_side(side, built[side], steps, device) for side in order})
    print(json.dumps({"rates": records, "batch": int(built["plain"][1].batch_size)}))


def child_memory(side: str, recipe: str, steps: int, threads: int, device: str, extra: list[str]) -> None:
    import torch

    torch.set_num_threads(threads)
    built = build(recipe, side, device, extra)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    time_side(side, built, steps, device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak}))


def child_epoch(side: str, recipe: str, threads: int, device: str, extra: list[str]) -> None:
    import pytorch_lightning as pl
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    module, datamodule, precision = build(recipe, side, device, extra)
    with tempfile.TemporaryDirectory() as plots:
        trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                             max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=per_step_callbacks(plots))
        trainer.fit(module, datamodule=datamodule)
    synchronize(device)
    print(json.dumps({"seconds": time.perf_counter() - start, "steps": module.generator_steps_done}))


def sync_check(recipe: str, variant: str, steps: int, device: str, extra: list[str], replay: bool = False) -> None:
    """Train ``steps`` steps with CUDA's sync debugging set to raise outside the block-read steps;
    ``replay``: with the experience replay buffer (callbacks=replay) as well."""
    import pytorch_lightning as pl
    import torch

    if device != "cuda":
        raise SystemExit("--sync-check needs --device cuda: the CPU has no host-device synchronisation")
    checked: list[int] = []

    class SyncCheck(pl.Callback):
        """Last in the list: from the end of the other callbacks' hooks of step b to the end of those of
        step b + 1 (Lightning's bookkeeping, the next batch, training_step, the hooks), raise on any
        host sync, unless b or b + 1 is a step on which something is due to read."""

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            torch.cuda.set_sync_debug_mode(0)
            step, every = pl_module.generator_steps_done, READ_EVERY
            if step >= WARMUP and step % every and (step + 1) % every and step + 1 < steps and not trainer.is_last_batch:
                torch.cuda.set_sync_debug_mode("error")
                checked.append(step + 1)

        def on_train_end(self, *args: Any) -> None:
            torch.cuda.set_sync_debug_mode(0)

    module, datamodule, precision = build(recipe, variant, device, extra)
    with tempfile.TemporaryDirectory() as plots:
        from gan_modules.callbacks.replay import ReplayBuffer

        callbacks = [*per_step_callbacks(plots), *([ReplayBuffer(capacity=1000)] if replay else []), SyncCheck()]
        trainer = pl.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=steps * (module.n_critic + 1),
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, log_every_n_steps=READ_EVERY, callbacks=callbacks)
        trainer.fit(module, datamodule=datamodule)
    print(f"{recipe} ({variant}{', replay' if replay else ''}): no host sync in {len(checked)} checked steps (steps {checked[0]}-{checked[-1]}, "
          f"all but those next to every {READ_EVERY}th)")


def run_child(*args: str) -> Any:
    out = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmarks/speed.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main() -> None:
    global READ_EVERY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["default", "seed_fashion_dcgan"], choices=list(RECIPES))
    parser.add_argument("--variants", nargs="+", default=["framework"], choices=list(VARIANTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=150, help=f"generator steps per segment (the first {WARMUP} untimed)")
    parser.add_argument("--rounds", type=int, default=7, help="segments of every side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--read-every", type=int, default=READ_EVERY,
                        help="the per-step callbacks' block: check_every_n_steps / read_every_n_steps")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every framework side")
    parser.add_argument("--epoch", choices=list(RECIPES), help="time one epoch of this recipe per side instead")
    parser.add_argument("--sync-check", choices=list(RECIPES), help="CUDA: check that steps make no host sync")
    parser.add_argument("--replay", action="store_true", help="--sync-check: add the replay buffer (callbacks=replay)")
    parser.add_argument("--child", choices=["speed", "memory", "epoch"])
    parser.add_argument("--side", default="plain")
    args = parser.parse_args()
    READ_EVERY = args.read_every
    if args.steps <= WARMUP + 1:
        parser.error(f"--steps must exceed the {WARMUP} warm-up steps")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible to PyTorch here")
    common = ["--device", args.device, "--threads", str(args.threads), "--read-every", str(args.read_every),
              "--extra", *args.extra]
    if args.child == "speed":
        return child_speed(args.recipes[0], args.variants, args.steps, args.rounds, args.threads, args.device, args.extra)
    if args.child == "memory":
        return child_memory(args.side, args.recipes[0], args.steps, args.threads, args.device, args.extra)
    if args.child == "epoch":
        return child_epoch(args.side, args.recipes[0], args.threads, args.device, args.extra)
    if args.sync_check:
        for variant in args.variants:
            sync_check(args.sync_check, variant, args.steps, args.device, args.extra, replay=args.replay)
        return
    if args.epoch:
        print(f"One epoch of {args.epoch} on {args.device} ({args.threads} threads), start-up included:\n")
        print("| side | generator steps | wall s | steps/s |")
        print("|---|---|---|---|")
        for side in args.variants:
            out = run_child("--child", "epoch", "--side", side, "--recipes", args.epoch, *common)
            print(f"| {side} | {out['steps']} | {out['seconds']:.1f} | {out['steps'] / out['seconds']:.2f} |", flush=True)
        return
    sides = ["plain", *args.variants]
    print(f"Device {args.device}, {args.threads} threads, {args.rounds} rounds of {args.steps} generator steps "
          f"({WARMUP} untimed); per-step callbacks read every {args.read_every} steps; extra overrides: "
          f"{args.extra or 'none'}\n")
    header = " | ".join(f"{side} img/s" for side in sides)
    ratios = " | ".join(f"{v} / plain" for v in args.variants)
    vs_framework = [v for v in args.variants if v != "framework" and "framework" in args.variants]
    ratios += "".join(f" | {v} / framework" for v in vs_framework)
    print(f"| recipe | batch | {header} | {ratios} | peak MiB ({', '.join(sides)}) |")
    print("|---|---|" + "---|" * (len(sides) + len(args.variants) + len(vs_framework) + 1))
    for recipe in args.recipes:
        out = run_child("--child", "speed", "--recipes", recipe, "--variants", *args.variants, "--steps",
                        str(args.steps), "--rounds", str(args.rounds), *common)
        rounds, batch = out["rates"], out["batch"]
        images = " | ".join(f"{statistics.median(r[s] for r in rounds) * batch:.0f}" for s in sides)
        cells = [spread([r[v] / r["plain"] for r in rounds]) for v in args.variants]
        cells += [spread([r[v] / r["framework"] for r in rounds]) for v in vs_framework]
        peaks = [run_child("--child", "memory", "--side", side, "--recipes", recipe, "--steps", str(args.steps),
                           *common)["peak_mib"] for side in sides]
        print(f"| {recipe} | {batch} | {images} | {' | '.join(cells)} | {' / '.join(f'{p:.0f}' for p in peaks)} |",
              flush=True)


if __name__ == "__main__":
    main()
