"""Export every generator family to ONNX and TorchScript and measure how closely the files agree with PyTorch.

    python benchmarks/export_parity.py
    python benchmarks/export_parity.py --checkpoint benchmarks/results/runs/stylegan2_s0/checkpoints/last.ckpt

Each family is the generator its model config builds for Fashion-MNIST padded to 32x32 (the
recipes' widths; weights randomly initialised from seed 0, so no training data is needed), plus one
row per ``--checkpoint`` (a trained run's sampling generator, as export.py loads it). Each network goes
through ``gan_modules.export.export_generator`` (which already refuses a file off by more than 1e-4),
then the written file is run by its own runtime (onnxruntime, torch.jit.load) at batch 1 and at
batch 8; style-based graphs at psi 1 and 0.7. The "PyTorch fp32 vs fp64" column is the network's own
rounding noise: the float32 graph in PyTorch against the same graph in float64 at batch 8, the scale
against which a runtime's difference should be read. Writes benchmarks/results/export_parity.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402

from gan_modules.atomic_files import atomic_write_text  # noqa: E402
from gan_modules.checkpoints import load_generator  # noqa: E402
from gan_modules.config import compose_config  # noqa: E402
from gan_modules.export import (OPSET, PARITY_PSIS, SamplingGraph, export_generator, max_abs_diff,  # noqa: E402
                                example_inputs)

RESULTS = ROOT / "benchmarks" / "results" / "export_parity.md"
DATASET = ["dataset=fashion_mnist", "dataset.image_size=32"]
FAMILIES = {  # row name: model config
    "MLP": "mlp_gan", "DCGAN": "dcgan", "conditional DCGAN": "cgan_dcgan", "ProGAN (fully grown)": "progan",
    "StyleGAN": "stylegan", "StyleGAN2": "stylegan2", "conditional StyleGAN2": "cgan_stylegan2",
    "VAE decoder": "vae",
}
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def config_generator(model: str) -> torch.nn.Module:
    """The sampling generator ``model=<model>`` builds (a VAE's decoder), freshly initialised."""
    cfg = compose_config([f"model={model}", *DATASET], "train")
    torch.manual_seed(0)
    if "network" in cfg.model:
        return instantiate(cfg.model.network).decoder.eval()
    return instantiate(cfg.model.generator).eval()  # a progressive net is built fully grown


def inputs_at(graph: SamplingGraph, batch: int) -> list[dict[str, torch.Tensor]]:
    psis = PARITY_PSIS if "truncation_psi" in graph.input_names else (1.0,)
    return [example_inputs(graph, batch, psi, seed=100 + i) for i, psi in enumerate(psis)]


@torch.no_grad()
def float64_gap(graph: SamplingGraph, batch: int = 8) -> float:
    """max |PyTorch float32 - PyTorch float64| over the batch's inputs: the network's own rounding noise."""
    worst = 0.0
    for inputs in inputs_at(graph, batch):
        single = graph(*inputs.values())
        wide = graph.double()(*[v.double() if v.is_floating_point() else v for v in inputs.values()])
        graph.float()
        worst = max(worst, float((single.double() - wide).abs().max()))
    return worst


def measure(name: str, generator: torch.nn.Module, fmt: str, folder: Path) -> dict:
    result = export_generator(generator, folder / f"{len(list(folder.iterdir()))}{SUFFIXES[fmt]}", fmt)
    graph = result.graph
    return {
        "family": name, "format": fmt, "opset": str(OPSET) if fmt == "onnx" else "-",
        "inputs": ", ".join(graph.input_names), "shape": "x".join(str(s) for s in generator.out_shape),
        "size": result.size_bytes, "seconds": result.seconds,
        "diff1": max_abs_diff(graph, result.path, fmt, inputs_at(graph, 1)),
        "diff8": max_abs_diff(graph, result.path, fmt, inputs_at(graph, 8)),
        "fp64": float64_gap(graph),
    }


def markdown(rows: list[dict]) -> str:
    import onnx
    import onnxruntime
    import onnxscript

    lines = [
        "# Export parity: ONNX and TorchScript against PyTorch",
        "",
        f"`python benchmarks/export_parity.py{''.join(' ' + a for a in sys.argv[1:])}`, {date.today().isoformat()}, CPU ({platform.machine()}), torch "
        f"{torch.__version__}, onnx {onnx.__version__}, onnxscript {onnxscript.__version__}, onnxruntime "
        f"{onnxruntime.__version__}.",
        "",
        "Networks at their model configs' widths for 32x32 Fashion-MNIST, randomly initialised (seed 0),",
        "except the trained rows (a run's sampling generator, as export.py loads it; the runs of",
        "benchmarks/progressive.py live in benchmarks/results/runs/, outside git). Max abs diff: the file",
        "(run by onnxruntime / torch.jit.load) against PyTorch, over all pixels of a batch (style-based:",
        "psi 1 and 0.7; fixed noise from seed 0). export.py refuses a file above 1e-4. fp32 vs fp64:",
        "PyTorch's own float32 rounding at batch 8, the scale a runtime's difference is read against.",
        "",
        "| family | format | opset | inputs | output | file size | max abs diff, batch 1 | batch 8 "
        "| PyTorch fp32 vs fp64 | export s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['family']} | {r['format']} | {r['opset']} | {r['inputs']} | {r['shape']} "
                     f"| {r['size'] / 1e6:.2f} MB | {r['diff1']:.1e} | {r['diff8']:.1e} | {r['fp64']:.1e} "
                     f"| {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--checkpoint", action="append", default=[], help="a trained checkpoint to add as a row")
    parser.add_argument("--formats", nargs="*", default=["onnx", "torchscript"], choices=["onnx", "torchscript"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    generators = [(name, lambda model=FAMILIES[name]: config_generator(model)) for name in args.families]
    for path in args.checkpoint:
        generators.append((f"trained: {Path(path).parents[1].name if len(Path(path).parents) > 1 else path}",
                           lambda path=path: load_generator(path)[0]))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, build in generators:
            generator = build()
            for fmt in args.formats:
                rows.append(measure(name, generator, fmt, Path(folder)))
                print(f"{name:24s} {fmt:11s} diff@1 {rows[-1]['diff1']:.1e} diff@8 {rows[-1]['diff8']:.1e} "
                      f"fp64 {rows[-1]['fp64']:.1e} {rows[-1]['seconds']:.1f}s", flush=True)
    text = markdown(rows)
    atomic_write_text(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
