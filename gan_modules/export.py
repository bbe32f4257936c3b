"""A trained generator as an inference graph: ONNX (read by onnxruntime and other runtimes) or TorchScript.

``sampling_graph(generator)`` wraps the sampling generator (what ``checkpoints.load_generator``
returns) in a module whose inputs are exactly what a user feeds:

* ``z``: ``(B, z_dim)`` float32, for every generator;
* ``labels``: ``(B,)`` int64 classes in ``[0, num_classes)``, for conditional generators;
* ``truncation_psi``: ``(1,)`` float32, for style-based generators (StyleGAN, StyleGAN2): the
  truncation trick ``w_avg + psi * (w - w_avg)`` is part of the graph, so one file serves every psi.

The output ``images`` is what ``G`` returns, in the model's data range (``output_range``), with the
batch dimension free. Style-based generators are exported with their per-pixel noise fixed
(``style_noise="fixed"``: one draw from ``noise_seed``, shared by all samples, as generate.py's
grids do) or left out (``"none"``), so that the graph is a function of its inputs and can be
checked against PyTorch.

``export_generator`` writes the file to a temporary name beside the output, loads it back with the
runtime that will read it (onnxruntime, ``torch.jit.load``), compares its outputs with PyTorch's on
a few inputs, and renames it into place only when they agree to ``PARITY_TOLERANCE``.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from gan_modules.atomic_files import TEMP_SUFFIX, DiskFullError
from gan_modules.nets.conditional import ConditionalGenerator, is_conditional
from gan_modules.nets.progressive import ProgressiveNet, fully_grown
from gan_modules.style_sampling import NOISE_CHOICES, is_style_based

FORMATS = ("onnx", "torchscript")
OPSET = 18  # fixed, so a file's operators do not change with the installed torch; onnxruntime >= 1.14 runs it
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 5)  # two sizes through the same file: the batch dimension is really dynamic
PARITY_PSIS = (1.0, 0.7)


class ExportError(ValueError):
    """The generator cannot be exported as asked; the message names the problem and the fix."""


class ParityError(ExportError):
    """The written graph disagrees with PyTorch by more than the tolerance."""

    def __init__(self, message: str, max_abs_diff: float) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


# --- growth -------------------------------------------------------------------------------------
def growth_state(generator: nn.Module) -> ProgressiveNet | None:
    """The progressive network inside ``generator`` (itself, or a conditional wrapper's backbone)."""
    for module in generator.modules():
        if isinstance(module, ProgressiveNet):
            return module
    return None


def check_growth(generator: nn.Module, allow_partial: bool, source: str = "the checkpoint") -> str | None:
    """None for a fully grown (or non-growing) generator; a note on what is exported for a partial one
    when ``allow_partial``; else an ``ExportError`` naming the stage and the fix."""
    net = growth_state(generator)
    if net is None or fully_grown(net):
        return None
    stage, alpha, last = int(net.stage), float(net.alpha), net.num_stages - 1
    size, full = net.current_resolution, 4 * 2 ** last
    fading = f", fading in with alpha {alpha:.3f}" if net.fading() else ""
    where = f"stage {stage} of 0..{last} ({size}x{size} of {full}x{full}{fading})"
    if not allow_partial:
        raise ExportError(
            f"{source} holds a {type(net).__name__} that is not fully grown: it is at {where}. Export a checkpoint "
            "from after growing finished (the run's last.ckpt once training passed the last stage), or pass "
            f"allow_partial=true to export it as it is, making {size}x{size} images."
        )
    return f"a partly grown generator, exported as it is: {where}; it makes {size}x{size} images"


def frozen_copy(generator: nn.Module) -> nn.Module:
    """An eval-mode copy whose progressive ``stage`` and ``alpha`` are constants rather than buffers.

    The networks read them with ``int(self.stage)``; ``torch.export`` lifts buffers to graph inputs,
    and a Python int taken from a graph input is data-dependent control flow it cannot trace. As
    plain tensors they are constants, folded at export time: the graph is the current stage.
    """
    frozen = copy.deepcopy(generator).eval()
    for module in frozen.modules():
        if isinstance(module, ProgressiveNet):
            stage, alpha = module.stage.detach().clone(), module.alpha.detach().clone()
            del module._buffers["stage"], module._buffers["alpha"]
            module.stage, module.alpha = stage, alpha
    return frozen.requires_grad_(False)


# --- the graph ----------------------------------------------------------------------------------
def style_network_path(generator: nn.Module) -> str | None:
    """Where the style-based network is: "" (the generator itself), "backbone" (inside a conditional
    wrapper), or None (no styles)."""
    if is_style_based(generator):
        return ""
    if is_conditional(generator) and is_style_based(getattr(generator, "backbone", nn.Module())):
        if not isinstance(generator, ConditionalGenerator):  # its z * embed(y) is what ``latent`` repeats
            raise ExportError(f"{type(generator).__name__} wraps a style-based generator in a way export.py does "
                              "not know; only ConditionalGenerator (model=cgan_stylegan2) is supported.")
        return "backbone"
    return None


def graph_input_names(generator: nn.Module) -> list[str]:
    return ["z"] + (["labels"] if is_conditional(generator) else []) + \
        (["truncation_psi"] if style_network_path(generator) is not None else [])


class SamplingGraph(nn.Module):
    """The exported function: ``z`` [+ ``labels``] [+ ``truncation_psi``] -> ``images``.

    ``input_names`` lists the inputs in call order. For style-based generators the styles are
    computed here rather than by ``G.forward`` (which draws fresh noise and takes psi as a Python
    float): ``w = map(z)``, truncated towards ``w_avg`` by the psi *tensor*, broadcast to every layer
    and synthesised with fixed or no noise.
    """

    def __init__(self, generator: nn.Module, style_noise: str = "fixed", noise_seed: int = 0) -> None:
        super().__init__()
        if style_noise not in NOISE_CHOICES:
            raise ExportError(f"style_noise must be one of {', '.join(NOISE_CHOICES)}; got {style_noise!r}.")
        self.style_path = style_network_path(generator)
        self.generator = frozen_copy(generator)
        self.conditional = is_conditional(generator)
        self.input_names = graph_input_names(generator)
        self.style_noise = style_noise if self.style_path is not None else None
        self.noise_seed = int(noise_seed)
        self.z_dim = int(generator.z_dim)
        self.num_classes = int(generator.num_classes) if self.conditional else None
        self.output_range = getattr(generator, "output_range", None)
        self.noise_count = 0
        if self.styled is not None and style_noise == "fixed":
            # One draw shared by the whole batch: (1, 1, r, r) per layer, broadcast by NoiseInjection.
            noise = self.styled.make_noise(1, torch.Generator().manual_seed(self.noise_seed), device="cpu")
            for i, tensor in enumerate(noise):
                self.register_buffer(f"noise_{i}", tensor)
            self.noise_count = len(noise)

    @property
    def styled(self) -> nn.Module | None:
        """The style-based network inside the copy (itself or the conditional wrapper's backbone)."""
        if self.style_path is None:
            return None
        return self.generator if self.style_path == "" else self.generator.get_submodule(self.style_path)

    def latent(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """What the style network's mapping takes: z, or ConditionalGenerator's ``z * embed(y)``."""
        return z if labels is None else z * self.generator.label_embedding(labels)

    def images(self, z: Tensor, labels: Tensor | None, psi: Tensor | None) -> Tensor:
        if self.styled is None:
            return self.generator(z) if labels is None else self.generator(z, labels)
        net = self.styled
        w = net.map(self.latent(z, labels))
        w_avg = net.w_avg.to(w.dtype)
        w = w_avg + psi.to(w.dtype) * (w - w_avg)
        ws = net.broadcast(w)
        if self.noise_count:
            return net.synthesis(ws, noise=[getattr(self, f"noise_{i}") for i in range(self.noise_count)])
        return net.synthesis(ws, noise_mode="none")

    def metadata(self) -> dict[str, str]:
        """Key-value facts stored in the file, so it can be used without this project."""
        meta = {"producer": "gan-lightning export.py", "inputs": ",".join(self.input_names), "z_dim": str(self.z_dim),
                "output_range": json.dumps(list(self.output_range) if self.output_range is not None else None)}
        if self.num_classes is not None:
            meta["num_classes"] = str(self.num_classes)
        if self.style_noise is not None:
            meta["style_noise"] = self.style_noise
            if self.style_noise == "fixed":
                meta["noise_seed"] = str(self.noise_seed)
        return meta


class PlainGraph(SamplingGraph):
    def forward(self, z: Tensor) -> Tensor:
        return self.images(z, None, None)


class ConditionalGraph(SamplingGraph):
    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.images(z, labels, None)


class StyleGraph(SamplingGraph):
    def forward(self, z: Tensor, truncation_psi: Tensor) -> Tensor:
        return self.images(z, None, truncation_psi)


class ConditionalStyleGraph(SamplingGraph):
    def forward(self, z: Tensor, labels: Tensor, truncation_psi: Tensor) -> Tensor:
        return self.images(z, labels, truncation_psi)


def sampling_graph(generator: nn.Module, style_noise: str = "fixed", noise_seed: int = 0) -> SamplingGraph:
    """The module to export for ``generator`` (one ``forward`` signature per kind of input)."""
    kind = {("z",): PlainGraph, ("z", "labels"): ConditionalGraph, ("z", "truncation_psi"): StyleGraph,
            ("z", "labels", "truncation_psi"): ConditionalStyleGraph}[tuple(graph_input_names(generator))]
    return kind(generator, style_noise, noise_seed).eval()


def example_inputs(graph: SamplingGraph, batch: int, psi: float = 1.0, seed: int = 0) -> dict[str, Tensor]:
    """Inputs of the graph for a parity check: seeded z, classes cycling from ``seed``, the given psi."""
    inputs = {"z": torch.randn(batch, graph.z_dim, generator=torch.Generator().manual_seed(seed))}
    if graph.conditional:
        inputs["labels"] = (torch.arange(batch, dtype=torch.long) + seed) % graph.num_classes
    if "truncation_psi" in graph.input_names:
        inputs["truncation_psi"] = torch.tensor([float(psi)], dtype=torch.float32)
    return inputs


def parity_inputs(graph: SamplingGraph, batches: tuple[int, ...] = PARITY_BATCHES) -> list[dict[str, Tensor]]:
    psis = PARITY_PSIS if "truncation_psi" in graph.input_names else (1.0,)
    return [example_inputs(graph, batch, psi, seed=i) for i, (batch, psi) in
            enumerate((b, p) for b in batches for p in psis)]


# --- writing and reading the files -------------------------------------------------------------
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' progress lines and tracer warnings (about the constants they fold) are not the
    user's business; errors still propagate."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def onnx_bytes(graph: SamplingGraph) -> bytes:
    """The graph as a serialised ONNX model (opset ``OPSET``), its batch dimension named ``batch``.

    torch.onnx's dynamo exporter (``torch.export``): the legacy TorchScript exporter cannot give
    StyleGAN2 a dynamic batch (its resampling kernels' shapes are traced as unknown).
    """
    example = example_inputs(graph, 2)
    batch = torch.export.Dim("batch", min=1)
    dynamic = {name: ({0: batch} if name != "truncation_psi" else None) for name in graph.input_names}
    try:
        with quiet():
            program = torch.onnx.export(graph, tuple(example.values()), None, input_names=graph.input_names,
                                        output_names=["images"], dynamic_shapes=dynamic, opset_version=OPSET,
                                        dynamo=True, verbose=False)
    except ImportError as err:  # onnxscript is what the dynamo exporter emits ONNX with
        raise ExportError(f"ONNX export needs the onnxscript package ({err}); pip install onnxscript.") from err
    model = program.model_proto
    for key, value in graph.metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def torchscript_bytes(graph: SamplingGraph) -> bytes:
    """The graph traced with ``torch.jit.trace`` (batch 2) and saved with ``torch.jit.save``; the
    metadata travels as the extra file ``export.json``."""
    with quiet():
        traced = torch.jit.trace(graph, tuple(example_inputs(graph, 2).values()), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"export.json": json.dumps(graph.metadata())})
    return buffer.getvalue()


def run_onnx(path: Path, inputs_list: list[dict[str, Tensor]]) -> list[Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(session.run(["images"], {k: v.numpy() for k, v in inputs.items()})[0])
            for inputs in inputs_list]


def run_torchscript(path: Path, inputs_list: list[dict[str, Tensor]]) -> list[Tensor]:
    with quiet():  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [module(*inputs.values()) for inputs in inputs_list]


@dataclass
class Exporter:
    serialise: Callable[[SamplingGraph], bytes]
    run: Callable[[Path, list[dict[str, Tensor]]], list[Tensor]]
    runtime: str


EXPORTERS = {"onnx": Exporter(onnx_bytes, run_onnx, "onnxruntime"),
             "torchscript": Exporter(torchscript_bytes, run_torchscript, "torch.jit.load")}


def max_abs_diff(graph: SamplingGraph, path: Path, fmt: str,
                 inputs_list: list[dict[str, Tensor]] | None = None) -> float:
    """The largest |file - PyTorch| over the parity inputs, run through the file's own runtime."""
    inputs_list = parity_inputs(graph) if inputs_list is None else inputs_list
    with torch.no_grad():
        expected = [graph(*inputs.values()) for inputs in inputs_list]
    got = EXPORTERS[fmt].run(path, inputs_list)
    worst = 0.0
    for want, have in zip(expected, got):
        if tuple(want.shape) != tuple(have.shape):
            raise ParityError(f"the exported graph returns shape {list(have.shape)} where PyTorch returns "
                              f"{list(want.shape)}", float("inf"))
        worst = max(worst, float((want.float() - have.float()).abs().max()))
    return worst


def write_staged(target: Path, data: bytes) -> Path:
    """``data`` in a new ``.<name>.<random>.tmp`` beside ``target`` (flushed to disk); its path."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(err.errno, f"The disk holding {target.parent} is full: {target.name} was not "
                                "written. Free some space (or write elsewhere) and run again.") from err
        raise
    os.chmod(name, 0o644)  # mkstemp creates 0600; outputs are ordinary files
    return Path(name)


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    size_bytes: int
    seconds: float
    graph: SamplingGraph


def export_generator(generator: nn.Module, output: str | Path, fmt: str, *, overwrite: bool = False,
                     style_noise: str = "fixed", noise_seed: int = 0) -> ExportResult:
    """Export ``generator`` to ``output`` as ``fmt`` ('onnx' or 'torchscript'), checked for parity.

    The file is written to a temporary sibling, run by its runtime on ``parity_inputs`` and renamed
    into place only when every output is within ``PARITY_TOLERANCE`` of PyTorch's; otherwise the
    temporary file is removed and a ``ParityError`` carries the measured difference. An existing
    ``output`` is replaced only with ``overwrite``.
    """
    if fmt not in EXPORTERS:
        raise ExportError(f"format={fmt} is not an export format; choose one of {', '.join(EXPORTERS)}.")
    target = Path(output)
    if target.exists() and not overwrite:
        raise ExportError(f"output={target} exists; pass overwrite=true to replace it, or choose another name.")
    graph = sampling_graph(generator, style_noise, noise_seed)
    start = time.perf_counter()
    data = EXPORTERS[fmt].serialise(graph)
    seconds = time.perf_counter() - start
    staged = write_staged(target, data)
    try:
        diff = max_abs_diff(graph, staged, fmt)
        if not diff <= PARITY_TOLERANCE:  # NaN fails too
            raise ParityError(
                f"the {fmt} file disagrees with PyTorch: max abs diff {diff:.3g} > {PARITY_TOLERANCE:g} "
                f"({EXPORTERS[fmt].runtime}, batches {list(PARITY_BATCHES)}); nothing was written to {target}.", diff)
        os.replace(staged, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise
    return ExportResult(target, fmt, diff, len(data), seconds, graph)


def describe_inputs(graph: SamplingGraph) -> str:
    parts = [f"z (B, {graph.z_dim}) float32"]
    if graph.conditional:
        parts.append(f"labels (B,) int64 in [0, {graph.num_classes - 1}]")
    if "truncation_psi" in graph.input_names:
        parts.append("truncation_psi (1,) float32")
    return ", ".join(parts)
