"""Export the sampling generator of a checkpoint as an inference graph, checked against PyTorch.

    python export.py checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt format=onnx output=generator.onnx
    python export.py checkpoint=... format=torchscript output=generator.pt
    python export.py checkpoint=... format=hub output=my_model/          # a model folder (gan_modules.hub)

The graph takes ``z`` (B, z_dim) float32, plus ``labels`` (B,) int64 for a conditional generator and
``truncation_psi`` (1,) float32 for a style-based one, and returns ``images`` in the model's data
range; B is free. It is the EMA generator where the run kept one, a VAE's decoder for a VAE. Every
file is run back through its runtime (onnxruntime, torch.jit.load) and kept only when it agrees with
PyTorch to 1e-4; the measured difference is printed. See docs/export.md.

Options (conf/export.yaml): overwrite=true replaces an existing output; allow_partial=true exports a
progressively grown generator that has not reached its last stage; style_noise=fixed|none and
noise_seed=N choose the noise of a style-based graph; trust_checkpoint=true builds model classes
from outside this project.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from gan_modules.atomic_files import DiskFullError, OutputPathError, check_output_path
from gan_modules.sampling import whole_number
from gan_modules.style_sampling import NOISE_CHOICES

DEFAULTS = Path(__file__).resolve().parent / "conf" / "export.yaml"
FORMATS = ("onnx", "torchscript", "hub")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
FLAGS = ("overwrite", "trust_checkpoint", "allow_partial")


def parse_args(argv: list[str]) -> DictConfig:
    """The options, checked (format, flags, the output path) before anything is loaded."""
    cfg = OmegaConf.load(DEFAULTS)
    OmegaConf.set_struct(cfg, True)
    loose = [a for a in argv if "=" not in a]
    if loose:
        raise SystemExit(f"export.py: options are key=value (e.g. checkpoint=last.ckpt format=onnx output=g.onnx); "
                         f"got {loose}.")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(argv))
    except ConfigKeyError as err:
        raise SystemExit(f"export.py: unknown option ({err.msg.splitlines()[0]}). Options: {', '.join(cfg.keys())}")
    except (OmegaConfBaseException, ValueError) as err:
        raise SystemExit(f"export.py: cannot read the options {argv}: {str(err).splitlines()[0]}")
    for key, example in (("checkpoint", "checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt"),
                         ("output", "output=generator.onnx")):
        try:
            if cfg[key] is None or str(cfg[key]) == "":
                raise MissingMandatoryValue(key)
        except MissingMandatoryValue:
            raise SystemExit(f"export.py: give the {key}, e.g. {example}") from None
    if cfg.format not in FORMATS:
        raise SystemExit(f"export.py: format={cfg.format} is not a format; choose one of {', '.join(FORMATS)}.")
    for key in FLAGS:
        if not isinstance(cfg[key], bool):
            raise SystemExit(f"export.py: {key} is true or false; got {cfg[key]!r}.")
    if cfg.style_noise not in NOISE_CHOICES:
        raise SystemExit(f"export.py: style_noise must be one of {', '.join(NOISE_CHOICES)}; got {cfg.style_noise!r}.")
    try:
        cfg.noise_seed = whole_number(cfg.noise_seed, "noise_seed", None)
    except ValueError as err:
        raise SystemExit(f"export.py: {err}.") from err
    if cfg.format != "hub":
        check_output(cfg)
    return cfg


def check_output(cfg: DictConfig) -> None:
    """A file of the format's suffix, in a writable folder, not replacing a file unless overwrite=true."""
    output, suffix = str(cfg.output), SUFFIXES[cfg.format]
    if not output.lower().endswith(suffix) and not Path(output).is_dir() and not output.endswith(("/", "\\")):
        raise SystemExit(f"export.py: format={cfg.format} writes a {suffix} file; output={output} has another "
                         f"suffix (e.g. output={Path(output).with_suffix(suffix)}).")
    try:
        check_output_path(output, "output")
    except OutputPathError as err:
        raise SystemExit(f"export.py: {err}") from err
    if Path(output).exists() and not cfg.overwrite:
        raise SystemExit(f"export.py: output={output} exists; pass overwrite=true to replace it, or choose another name.")


def export_hub(cfg: DictConfig) -> Path:
    try:  # written separately (part 4 of issue 18); imported only when asked for
        from gan_modules.hub import save_model_folder
    except ImportError as err:
        raise SystemExit(f"export.py: format=hub needs gan_modules/hub.py, which this installation lacks ({err}).")
    from gan_modules.checkpoints import load_generator
    from gan_modules.export import check_growth

    try:  # a generator that has not finished growing is refused here too, unless allow_partial=true
        generator, _ = load_generator(cfg.checkpoint, trust=bool(cfg.trust_checkpoint))
        check_growth(generator, bool(cfg.allow_partial), str(cfg.checkpoint))
    except (ValueError, FileNotFoundError, OSError) as err:
        raise SystemExit(f"export.py: {err}") from err
    folder = save_model_folder(Path(cfg.checkpoint), Path(cfg.output), trust=bool(cfg.trust_checkpoint),
                               overwrite=bool(cfg.overwrite))
    print(f"Wrote the model folder {folder}")
    return Path(folder)


def export(cfg: DictConfig) -> Path:
    if cfg.format == "hub":
        return export_hub(cfg)
    from gan_modules.checkpoints import load_generator
    from gan_modules.export import OPSET, ExportError, check_growth, describe_inputs, export_generator

    try:
        generator, _ = load_generator(cfg.checkpoint, trust=bool(cfg.trust_checkpoint))
        partial = check_growth(generator, bool(cfg.allow_partial), str(cfg.checkpoint))
        result = export_generator(generator, cfg.output, cfg.format, overwrite=bool(cfg.overwrite),
                                  style_noise=str(cfg.style_noise), noise_seed=int(cfg.noise_seed))
    except DiskFullError as err:
        raise SystemExit(f"export.py: {err.strerror}") from err
    except (ExportError, ValueError, FileNotFoundError, OSError) as err:
        raise SystemExit(f"export.py: {err}") from err
    graph = result.graph
    kind = f"ONNX opset {OPSET}" if cfg.format == "onnx" else "TorchScript"
    value_range = list(graph.output_range) if graph.output_range is not None else "the data's range"
    noise = f"; noise: {graph.style_noise}" + (f" (seed {graph.noise_seed})" if graph.style_noise == "fixed" else "") \
        if graph.style_noise else ""
    print(f"Wrote {result.path} ({kind}, {result.size_bytes / 1e6:.2f} MB); inputs {describe_inputs(graph)}; "
          f"output images in {value_range}{noise}.")
    if partial:
        print(f"Note: {partial}.")
    runtime = "onnxruntime" if cfg.format == "onnx" else "torch.jit.load"
    print(f"Parity with PyTorch ({runtime}): max abs diff {result.max_abs_diff:.3g} (batches 1 and 5).")
    return result.path


def main(argv: list[str] | None = None) -> Path:
    return export(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    from gan_modules.errors import report_user_errors

    with report_user_errors("export.py"):  # a bad file or value: one line naming it, not a traceback
        main()
