"""Sample from a trained generator: the checkpoint alone is enough.

    python generate.py checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt num_samples=10000 \
        output=samples.npz seed=0 grid=grid.png

Writes ``arr_0`` as uint8 N x H x W x C for images (the layout standard evaluators read) or
float32 N x D for vector data. Controllable generation (options in conf/generate.yaml), one mode a call:

    python generate.py checkpoint=... labels=[0,3,7] num_samples=8 grid=g.png   # conditional: these classes
    python generate.py checkpoint=... class_grid=classes.png                     # conditional: same z, every class
    python generate.py checkpoint=... interpolate=[1,2,3] steps=8 slerp=true     # PNG grid + GIF
    python generate.py checkpoint=... arithmetic=[7,1,4]                          # mean z(7) - z(1) + z(4)

Style-based generators (model=stylegan) also take:

    python generate.py checkpoint=... truncation_psi=0.7 grid=g.png     # truncation trick for any mode drawing z
    python generate.py checkpoint=... style_mixing=mixing.png           # rows: coarse styles, columns: fine
    python generate.py checkpoint=... truncation_sweep=psi.png          # rows: seeds, columns: psis

The style-mixing grid's first row shows the column sources (seeds ``style_mixing_columns``), its first
column the row sources (``style_mixing_rows``); cell (i, j) takes the first ``style_mixing_crossover``
styles (default: the 4x4 and 8x8 blocks') from row i and the rest from column j. The truncation sweep
renders each of ``truncation_seeds`` at every psi of ``truncation_psis`` (psi 0: the mean image). Both
draw every cell with the same noise (``style_noise``: fixed from ``seed``, or none).
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from gan_modules.atomic_files import DiskFullError, OutputPathError, atomic_write, check_output_path

from gan_modules.checkpoints import load_generator
from gan_modules.images import save_grid, to_uint8_hwc
from gan_modules.nets.conditional import check_labels, cycling_labels, is_conditional
from gan_modules.sampling import (
    animation_frames,
    class_exemplars,
    interpolation_path,
    latent_arithmetic,
    available_memory_bytes,
    chunked_latents,
    sample_in_batches,
    seed_latent,
    whole_number,
    whole_numbers,
)
from gan_modules.style_sampling import NOISE_CHOICES, Truncated, style_mixing_grid, truncation_sweep_grid

MODES = ("interpolate", "arithmetic", "class_grid", "style_mixing", "truncation_sweep")

DEFAULTS = Path(__file__).resolve().parent / "conf" / "generate.yaml"


INTEGERS = {  # option: smallest value (None: any whole number; seeds may be negative)
    "num_samples": 1, "batch_size": 1, "steps": 2, "seed": None, "grid_size": 1, "class_grid_rows": 1,
    "arithmetic_pool": 1, "arithmetic_exemplars": 1, "style_mixing_crossover": 1,
}
INTEGER_LISTS = {"labels": 0, "interpolate": None, "arithmetic": 0, "style_mixing_rows": None,
                 "style_mixing_columns": None, "truncation_seeds": None}


def parse_args(argv: list[str]) -> DictConfig:
    cfg = OmegaConf.load(DEFAULTS)
    OmegaConf.set_struct(cfg, True)
    loose = [a for a in argv if "=" not in a]
    if loose:  # from_dotlist would fail on them with a parser message
        raise SystemExit(f"generate.py: options are key=value (e.g. num_samples=100 checkpoint=last.ckpt); got {loose}.")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(argv))
        _ = cfg.checkpoint
    except ConfigKeyError as err:
        raise SystemExit(f"generate.py: unknown option ({err.msg.splitlines()[0]}). Options: {', '.join(cfg.keys())}")
    except MissingMandatoryValue:
        raise SystemExit("generate.py: give the checkpoint, e.g. checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt")
    except (OmegaConfBaseException, ValueError) as err:  # e.g. labels=[1,2 (an unclosed list)
        raise SystemExit(f"generate.py: cannot read the options {argv}: {str(err).splitlines()[0]}")
    for key in ("labels", "interpolate", "arithmetic", "style_mixing_rows", "style_mixing_columns",
                "truncation_seeds", "truncation_psis"):
        if cfg[key] is not None and not OmegaConf.is_list(cfg[key]):
            raise SystemExit(f"generate.py: {key} takes a list, e.g. {key}=[1,2,3]; got {cfg[key]!r}.")
    try:  # 1.7 samples or class 1.7 must not silently become 1
        for key, minimum in INTEGERS.items():
            if cfg[key] is not None:
                cfg[key] = whole_number(cfg[key], key, minimum)
        for key, minimum in INTEGER_LISTS.items():
            if cfg[key] is not None:
                cfg[key] = whole_numbers(cfg[key], key, minimum)
        for key in ("truncation_psi", "truncation_psis"):
            values = cfg[key] if OmegaConf.is_list(cfg[key]) else [cfg[key]]
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{key} takes finite numbers, e.g. truncation_psi=0.7; got {value!r}")
    except ValueError as err:
        raise SystemExit(f"generate.py: {err}.") from err
    chosen = [m for m in MODES if cfg[m] not in (None, False)]
    if len(chosen) > 1:
        raise SystemExit(f"generate.py: give one of {', '.join(chosen)} per call.")
    if cfg.interpolate is not None and len(cfg.interpolate) < 2:
        raise SystemExit("generate.py: interpolate needs two or more seeds (e.g. interpolate=[1,2]) and steps >= 2.")
    if cfg.arithmetic is not None and len(cfg.arithmetic) != 3:
        raise SystemExit("generate.py: arithmetic needs three classes [a,b,c] (a - b + c) and arithmetic_exemplars >= 1.")
    if cfg.labels is not None and len(cfg.labels) == 0:
        raise SystemExit("generate.py: labels must list at least one class, e.g. labels=[0,3,7].")
    for key in ("style_mixing_rows", "style_mixing_columns", "truncation_seeds", "truncation_psis"):
        if not cfg[key]:
            raise SystemExit(f"generate.py: {key} must list at least one value, e.g. {key}=[1,2,3].")
    if cfg.style_noise not in NOISE_CHOICES:
        raise SystemExit(f"generate.py: style_noise must be one of {', '.join(NOISE_CHOICES)}; got {cfg.style_noise!r}.")
    if cfg.truncation_sweep and cfg.truncation_psi != 1.0:
        raise SystemExit("generate.py: truncation_sweep takes its psis from truncation_psis=[...]; leave truncation_psi at 1.")
    check_device(str(cfg.device))
    check_outputs(cfg)
    return cfg


def planned_outputs(cfg: DictConfig) -> list[tuple[str, str, str]]:
    """(option, path, required suffix) of every file the chosen mode writes."""
    if cfg.style_mixing:
        return [("style_mixing", str(cfg.style_mixing), ".png")]
    if cfg.truncation_sweep:
        return [("truncation_sweep", str(cfg.truncation_sweep), ".png")]
    if cfg.interpolate is not None:
        png = str(cfg.interpolation_output)
        return [("interpolation_output", png, ".png"),
                ("interpolation_output (its GIF)", str(Path(png).with_suffix(".gif")), ".gif")]
    if cfg.arithmetic is not None:
        return [("arithmetic_output", str(cfg.arithmetic_output), ".png")]
    if cfg.class_grid:
        return [("class_grid", str(cfg.class_grid), ".png")]
    return [("output", str(cfg.output), ".npz")] + ([("grid", str(cfg.grid), ".png")] if cfg.grid else [])


def check_outputs(cfg: DictConfig) -> None:
    """Refuse, before the checkpoint is loaded, a path the chosen mode could not write as asked: the
    file written is exactly the one named (np.savez would add .npz to samples.png)."""
    outputs = planned_outputs(cfg)
    for key, path, suffix in outputs:
        if path.endswith(("/", os.sep)) or Path(path).is_dir():
            raise SystemExit(f"generate.py: {key}={path} is a folder; give a file name, e.g. "
                             f"{key.split()[0]}={Path(path) / ('samples' + suffix)}.")
        if not path.lower().endswith(suffix):
            raise SystemExit(f"generate.py: {key}={path} must name a {suffix} file, e.g. "
                             f"{key.split()[0]}={Path(path).with_suffix(suffix)}.")
        try:
            check_output_path(path, key.split()[0])
        except OutputPathError as err:
            raise SystemExit(f"generate.py: {err}") from err
    paths = [str(Path(path).resolve()) for _, path, _ in outputs]
    if len(set(paths)) != len(paths):
        raise SystemExit(f"generate.py: two outputs name the same file ({', '.join(p for _, p, _ in outputs)}).")


def check_device(name: str) -> None:
    """An unknown device or one this machine lacks fails here, before the checkpoint is loaded."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SystemExit(f"generate.py: device={name} is not a device; use device=cpu, device=cuda or device=cuda:N.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"generate.py: device={name} but no CUDA GPU is usable here; use device=cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(f"generate.py: device={name} but this machine has {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise SystemExit(f"generate.py: device={name} but MPS is not available here; use device=cpu.")
    elif device.type != "cpu":
        raise SystemExit(f"generate.py: device={name} is not supported; use device=cpu, cuda or mps.")


def require_finite(samples: torch.Tensor, cfg: DictConfig) -> torch.Tensor:
    """Non-finite outputs would be written as black or white images and look like a result."""
    bad = ~torch.isfinite(samples.flatten(1)).all(1) if samples.dim() > 1 else ~torch.isfinite(samples)
    if bool(bad.any()):
        raise SystemExit(f"generate.py: the generator of {cfg.checkpoint} produced NaN or infinite values in "
                         f"{int(bad.sum())} of {len(samples)} samples; nothing was written. Its weights have "
                         "probably diverged: use an earlier checkpoint of the run.")
    return samples


def draw(cfg: DictConfig, generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    return require_finite(sample_in_batches(generator, z, labels, cfg.batch_size, cfg.device), cfg)


def check_memory(cfg: DictConfig, generator: torch.nn.Module, total: int, conditional: bool) -> None:
    """Refuse a num_samples whose samples would not fit in memory, before drawing any of them."""
    available = available_memory_bytes()
    if available is None:
        return
    probe_labels = cycling_labels(1, generator.num_classes) if conditional else None
    shape = sample_in_batches(generator, torch.zeros(1, generator.z_dim), probe_labels, 1, cfg.device).shape[1:]
    needed = total * math.prod(shape) * 5  # float32 samples plus their uint8 copy
    if needed > available:
        raise SystemExit(
            f"generate.py: {total} samples of shape {list(shape)} need about {needed / 2**30:.1f} GiB of memory, "
            f"but {available / 2**30:.1f} GiB are available. Ask for fewer (num_samples), or make several files "
            "with different seeds (seed=0, seed=1, ...)."
        )


def requested_labels(cfg: DictConfig, generator: torch.nn.Module) -> torch.Tensor | None:
    """The ``labels`` option checked against the model: None for an unconditional generator."""
    if not is_conditional(generator):
        if cfg.labels is not None or cfg.class_grid:
            raise SystemExit("generate.py: labels= and class_grid= need a conditional model (model=cgan_*); "
                             "this checkpoint's generator is unconditional.")
        return None
    if cfg.labels is None:
        return None
    try:
        return check_labels(torch.tensor(list(cfg.labels)), generator.num_classes)
    except ValueError as err:
        raise SystemExit(f"generate.py: {err}") from err


def one_class(generator: torch.nn.Module, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """For interpolation and arithmetic: a conditional model renders everything at one class."""
    if not is_conditional(generator):
        return None
    return torch.full((n,), int(labels[0]) if labels is not None else 0, dtype=torch.long)


def require_images(samples: torch.Tensor, what: str) -> None:
    if samples.dim() != 4:
        raise SystemExit(f"generate.py: {what} draws images; this model makes vectors.")


@torch.no_grad()
def generate(cfg: DictConfig) -> Path:
    """Run the mode the options ask for; returns the main file written."""
    try:
        generator, run_cfg = load_generator(cfg.checkpoint, trust=bool(cfg.trust_checkpoint))
    except (ValueError, FileNotFoundError, OSError) as err:
        raise SystemExit(f"generate.py: {err}") from err
    generator.to(cfg.device)
    labels = requested_labels(cfg, generator)
    try:
        return write_mode(cfg, generator, run_cfg, labels)
    except DiskFullError as err:  # the message says where, and that an existing file is intact
        raise SystemExit(f"generate.py: {err.strerror}") from err


def write_mode(cfg: DictConfig, generator: torch.nn.Module, run_cfg: DictConfig, labels: torch.Tensor | None) -> Path:
    try:
        if cfg.style_mixing:
            return write_style_mixing(cfg, generator)
        if cfg.truncation_sweep:
            return write_truncation_sweep(cfg, generator)
        if cfg.truncation_psi != 1.0:  # every mode below samples through G(z)
            generator = Truncated(generator, float(cfg.truncation_psi))
    except ValueError as err:
        raise SystemExit(f"generate.py: {err}") from err
    if cfg.interpolate is not None:
        return write_interpolation(cfg, generator, labels)
    if cfg.arithmetic is not None:
        return write_arithmetic(cfg, generator, run_cfg, labels)
    if cfg.class_grid:
        return write_class_grid(cfg, generator, labels)
    return write_samples(cfg, generator, labels)


def write_samples(cfg: DictConfig, generator: torch.nn.Module, labels: torch.Tensor | None) -> Path:
    check_memory(cfg, generator, cfg.num_samples * (1 if labels is None else len(labels)), is_conditional(generator))
    z = chunked_latents(cfg.num_samples, generator.z_dim, int(cfg.seed), cfg.batch_size)
    sample_labels = None
    if labels is not None:  # num_samples per class, class after class, the same z for every class
        sample_labels = labels.repeat_interleave(cfg.num_samples)
        z = z.repeat(len(labels), 1)
    elif is_conditional(generator):  # every class equally often
        sample_labels = cycling_labels(cfg.num_samples, generator.num_classes)
    samples = draw(cfg, generator, z, sample_labels)
    is_image = samples.dim() == 4
    array = to_uint8_hwc(samples, generator.output_range).numpy() if is_image else samples.numpy().astype(np.float32)
    output = Path(cfg.output)
    extra = {} if sample_labels is None else {"labels": sample_labels.numpy()}
    with atomic_write(output, "wb") as handle:  # a handle: np.savez writes exactly this name, adds no suffix
        np.savez(handle, array, **extra)
    print(f"Wrote {len(array)} samples of shape {list(array.shape[1:])} ({array.dtype}) to {output}"
          + (" with their labels" if extra else ""))
    if cfg.grid:
        if not is_image:
            raise SystemExit("generate.py: grid= needs image samples; this model makes vectors.")
        if labels is not None:  # rows = the requested classes
            columns = min(cfg.num_samples, max(1, cfg.grid_size // len(labels)))
            picked = samples.view(len(labels), cfg.num_samples, *samples.shape[1:])[:, :columns].flatten(0, 1)
            path = save_grid(picked, cfg.grid, generator.output_range, nrow=columns)
        else:  # a conditional model's columns are its classes, as in training's sample grids
            nrow = generator.num_classes if sample_labels is not None else 8
            path = save_grid(samples[: cfg.grid_size], cfg.grid, generator.output_range, nrow=nrow)
        print(f"Wrote a grid of {min(cfg.grid_size, len(samples))} samples to {path}")
    return output


def write_class_grid(cfg: DictConfig, generator: torch.nn.Module, labels: torch.Tensor | None) -> Path:
    """The same z in every class: rows = z, columns = classes."""
    classes = labels if labels is not None else torch.arange(generator.num_classes)
    z = torch.randn(cfg.class_grid_rows, generator.z_dim, generator=torch.Generator().manual_seed(int(cfg.seed)))
    samples = draw(cfg, generator, z.repeat_interleave(len(classes), 0), classes.repeat(len(z)))
    require_images(samples, "class_grid")
    path = save_grid(samples, cfg.class_grid, generator.output_range, nrow=len(classes))
    print(f"Wrote {len(z)} latents x classes {classes.tolist()} to {path}")
    return path


def save_gif(frames: torch.Tensor, value_range: Sequence[float] | None, path: Path, duration_ms: int = 120) -> Path:
    """An animated GIF of image frames (N, C, H, W), enlarged so small images stay visible."""
    from PIL import Image

    array = to_uint8_hwc(frames, value_range).numpy()
    scale = max(1, 128 // array.shape[1])  # nearest-neighbour: 8x8 or 28x28 frames are unreadable as they are
    images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).resize(
        (a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST) for a in array]
    # Pillow merges identical consecutive frames (summing their durations): a path whose images do not
    # change (an untrained or collapsed model) gives fewer frames than requested.
    with atomic_write(path, "wb") as handle:
        images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


def write_interpolation(cfg: DictConfig, generator: torch.nn.Module, labels: torch.Tensor | None) -> Path:
    latents = torch.stack([seed_latent(s, generator.z_dim) for s in cfg.interpolate])
    path = interpolation_path(latents, int(cfg.steps), spherical=bool(cfg.slerp))  # (segments, steps, z_dim)
    flat = path.flatten(0, 1)
    samples = draw(cfg, generator, flat, one_class(generator, labels, len(flat)))
    require_images(samples, "interpolate")
    png = save_grid(samples, cfg.interpolation_output, generator.output_range, nrow=int(cfg.steps))
    frames = animation_frames(samples.view(*path.shape[:2], *samples.shape[1:]))
    gif = save_gif(frames, generator.output_range, png.with_suffix(".gif"))
    kind = "spherical" if cfg.slerp else "linear"
    print(f"Wrote the {kind} interpolation through seeds {list(cfg.interpolate)} to {png} and {gif} ({len(frames)} frames)")
    return png


def write_arithmetic(cfg: DictConfig, generator: torch.nn.Module, run_cfg: DictConfig,
                     labels: torch.Tensor | None) -> Path:
    from gan_modules.images import to_unit_range
    from gan_modules.metrics.evaluation import feature_net_name
    from gan_modules.metrics.features import load_feature_net

    dataset = str(run_cfg.dataset._target_).rsplit(".", 1)[-1]
    name = cfg.feature_net or feature_net_name(run_cfg.dataset)
    if name is None:
        raise SystemExit(f"generate.py: no shipped feature network fits {dataset}: set feature_net=NAME.")
    net, _ = load_feature_net(name)
    net.eval()

    def classify(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(to_unit_range(x, generator.output_range)), dim=1)

    noise = torch.Generator().manual_seed(int(cfg.seed))
    pool = torch.randn(cfg.arithmetic_pool, generator.z_dim, generator=noise)
    samples = draw(cfg, generator, pool, one_class(generator, labels, len(pool)))
    require_images(samples, "arithmetic")
    a, b, c = (int(v) for v in cfg.arithmetic)
    try:
        exemplars = class_exemplars(pool, samples, classify, [a, b, c], int(cfg.arithmetic_exemplars))
    except ValueError as err:
        raise SystemExit(f"generate.py: {err}") from err
    result = latent_arithmetic(exemplars[a], exemplars[b], exemplars[c])
    # Each row: the exemplars, then their mean; the last row: the result and jittered copies of it.
    rows = [torch.cat([exemplars[k], exemplars[k].mean(0, keepdim=True)]) for k in (a, b, c)]
    jitter = 0.25 * torch.randn(cfg.arithmetic_exemplars, generator.z_dim, generator=noise)
    rows.append(torch.cat([result[None], result + jitter]))
    z = torch.cat(rows)
    images = draw(cfg, generator, z, one_class(generator, labels, len(z)))
    path = save_grid(images, cfg.arithmetic_output, generator.output_range, nrow=int(cfg.arithmetic_exemplars) + 1)
    predicted = classify(images[-(cfg.arithmetic_exemplars + 1):]).argmax(1).tolist()
    print(f"Wrote z({a}) - z({b}) + z({c}) to {path}; the feature network ({name}) reads the result row as {predicted}")
    return path


def write_style_mixing(cfg: DictConfig, generator: torch.nn.Module) -> Path:
    rows, columns = [int(s) for s in cfg.style_mixing_rows], [int(s) for s in cfg.style_mixing_columns]
    images, nrow = style_mixing_grid(generator, rows, columns, cfg.style_mixing_crossover, float(cfg.truncation_psi),
                                     cfg.style_noise, int(cfg.seed))
    require_finite(images, cfg)
    path = save_grid(images, cfg.style_mixing, generator.output_range, nrow=nrow)
    print(f"Wrote the style mixing of row seeds {rows} (coarse styles) with column seeds {columns} (fine) to {path}")
    return path


def write_truncation_sweep(cfg: DictConfig, generator: torch.nn.Module) -> Path:
    seeds, psis = [int(s) for s in cfg.truncation_seeds], [float(p) for p in cfg.truncation_psis]
    images, nrow = truncation_sweep_grid(generator, seeds, psis, cfg.style_noise, int(cfg.seed))
    require_finite(images, cfg)
    path = save_grid(images, cfg.truncation_sweep, generator.output_range, nrow=nrow)
    print(f"Wrote seeds {seeds} (rows) at truncation psi {psis} (columns) to {path}")
    return path


def main(argv: list[str] | None = None) -> Path:
    return generate(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    from gan_modules.errors import report_user_errors

    with report_user_errors("generate.py"):  # a bad file or value: one line naming it, not a traceback
        main()
