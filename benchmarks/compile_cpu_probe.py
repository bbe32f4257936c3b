"""Why ``model.compile=true`` slows the seed DCGAN on a CPU: eager against ``torch.compile`` (inductor) for
each network's forward and backward, and for the single operations that explain the difference.

    python benchmarks/compile_cpu_probe.py
    python benchmarks/compile_cpu_probe.py --threads 2 --inductor fallback_random=1 layout_optimization=0

Every row times eager and compiled in one process, alternating over ``--rounds`` rounds, and reports
milliseconds per call (median over rounds) and eager / compiled (above 1: compile is faster). The
operation rows isolate what the networks' backward passes save: LeakyReLU and dropout keep a boolean
mask of the forward pass, and inductor's C++ code for a boolean output is far slower than ATen's
(the mask goes through a scalar loop per vector), while the same arithmetic with a float output is
not. ``--inductor KEY=0|1`` sets ``torch._inductor.config`` flags, e.g. ``fallback_random=1`` (ATen's
random numbers for dropout instead of inductor's own) and ``layout_optimization=0`` (no
channels-last conversions around the convolutions).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gan_modules.nets.dcgan_seed import SeedDCGANDiscriminator, SeedDCGANGenerator  # noqa: E402


def network_case(name: str, batch: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """Forward and backward of one seed network, eager and through ``torch.compile`` (one module, so
    both run the same weights; gradients accumulate, which does not change the timing)."""
    torch.manual_seed(0)
    if name.startswith("D"):
        net = SeedDCGANDiscriminator([1, 28, 28], dropout=0.4 if name == "D" else 0.0)
        inputs = torch.randn(batch, 1, 28, 28, requires_grad=True)
    else:
        net = SeedDCGANGenerator([1, 28, 28])
        inputs = torch.randn(batch, 100, requires_grad=True)
    compiled = torch.compile(net)

    def run(module: torch.nn.Module) -> Callable[[], None]:
        def call() -> None:
            out = module(inputs)
            (out.logits if hasattr(out, "logits") else out).sum().backward()
        return call
    return run(net), run(compiled)


def op_case(name: str, batch: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """One elementwise operation on the shape of D's first activation."""
    x = torch.randn(batch, 64, 14, 14)
    fn = {"x > 0 (bool out)": lambda t: t > 0,
          "(x > 0).float()": lambda t: (t > 0).float(),
          "leaky_relu (float out)": lambda t: F.leaky_relu(t, 0.2),
          "leaky_relu and its mask": lambda t: (F.leaky_relu(t, 0.2), t > 0)}[name]
    compiled = torch.compile(fn)
    return (lambda: fn(x)), (lambda: compiled(x))


def time_pair(eager: Callable[[], None], compiled: Callable[[], None], calls: int, rounds: int) -> tuple[float, float]:
    for f in (eager, compiled):
        for _ in range(3):
            f()  # compile, warm caches
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            f = (eager, compiled)[i]
            start = time.perf_counter()
            for _ in range(calls):
                f()
            times[i].append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=positive_int, default=32, help="the seed recipe's batch")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--inductor", nargs="*", default=[], metavar="KEY=0|1",
                        help="torch._inductor.config flags, e.g. fallback_random=1 layout_optimization=0")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config
    for item in args.inductor:
        key, _, value = item.partition("=")
        if not isinstance(getattr(inductor_config, key, None), bool) or value not in ("0", "1"):
            parser.error(f"--inductor {item!r}: give KEY=0 or KEY=1 for a true/false flag of torch._inductor.config, "
                         "such as fallback_random or layout_optimization.")
        setattr(inductor_config, key, value == "1")

    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, inductor flags: {args.inductor or 'defaults'}")
    print("| case | eager ms | compiled ms | eager / compiled |\n|---|---|---|---|")
    cases = [("G forward+backward", network_case, "G", 10), ("D forward+backward", network_case, "D", 10),
             ("D without dropout", network_case, "D_nodropout", 10)]
    cases += [(name, op_case, name, 100) for name in ("x > 0 (bool out)", "(x > 0).float()", "leaky_relu (float out)",
                                                       "leaky_relu and its mask")]
    for label, make, key, calls in cases:
        eager_ms, compiled_ms = time_pair(*make(key, args.batch), calls=calls, rounds=args.rounds)
        print(f"| {label} | {eager_ms:.3f} | {compiled_ms:.3f} | {eager_ms / compiled_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
