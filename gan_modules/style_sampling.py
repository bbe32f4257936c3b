"""Controllable generation for style-based generators (StyleGAN): truncation, style-mixing grids,
truncation sweeps. Pure tensor functions; ``generate.py`` turns them into files.

A "style-based generator" is one with ``map``, ``broadcast``, ``truncate``, ``mix``, ``synthesis``,
``num_ws`` and ``w_avg`` (``gan_modules.nets.stylegan.StyleGANGenerator``). Grids render every cell
with the same noise (drawn once from a seed, or none at all), so that cells differ only in their
styles and the same options always give the same picture.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from gan_modules.sampling import seed_latent

STYLE_API = ("map", "broadcast", "truncate", "mix", "synthesis", "num_ws", "w_avg")
NOISE_CHOICES = ("fixed", "none")


def is_style_based(generator: nn.Module) -> bool:
    return all(hasattr(generator, name) for name in STYLE_API)


def require_style_based(generator: nn.Module, what: str) -> None:
    """A clear error when ``what`` (an option) is asked of a generator without styles."""
    if not is_style_based(generator):
        raise ValueError(f"{what} needs a style-based generator (model=stylegan); this checkpoint's generator is "
                         f"a {type(generator).__name__}, which has no mapping network or styles.")


class Truncated(nn.Module):
    """``G(z)`` with the truncation trick at ``psi``: a drop-in generator for the ordinary sampling
    code (``sample_in_batches``, interpolation), which only ever calls ``G(z)``."""

    def __init__(self, generator: nn.Module, psi: float) -> None:
        super().__init__()
        require_style_based(generator, f"truncation_psi={psi}")
        self.generator, self.psi = generator, float(psi)
        self.z_dim, self.out_shape, self.output_range = generator.z_dim, generator.out_shape, generator.output_range

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z, truncation_psi=self.psi)


def default_crossover(generator: nn.Module) -> int:
    """The coarse styles of a style-mixing grid by default: the 4x4 and 8x8 blocks' (4 layers), fewer
    when the network has no finer block left for the columns to supply (an 8x8 network: 2)."""
    active = int(getattr(generator, "active_ws", generator.num_ws))
    return max(1, min(4, active - 2))


def fixed_noise(generator: nn.Module, batch_size: int, seed: int) -> list[Tensor]:
    """One noise draw from ``seed`` for every layer, shared by all ``batch_size`` samples."""
    noise = generator.make_noise(1, torch.Generator().manual_seed(int(seed)))
    return [n.expand(batch_size, -1, -1, -1) for n in noise]


def seed_styles(generator: nn.Module, seeds: Sequence[int], psi: float = 1.0) -> Tensor:
    """The per-layer styles ``(len(seeds), num_ws, w_dim)`` of the latents these seeds name, truncated
    towards the mean w by ``psi`` (1: untouched)."""
    device = generator.w_avg.device
    z = torch.stack([seed_latent(s, generator.z_dim) for s in seeds]).to(device)
    w = generator.map(z)
    return generator.broadcast(w if psi == 1.0 else generator.truncate(w, psi))


def render(generator: nn.Module, ws: Tensor, noise: str = "fixed", seed: int = 0) -> Tensor:
    """Images for styles ``ws``, every one with the same noise (``noise``: 'fixed' from ``seed`` or 'none')."""
    if noise not in NOISE_CHOICES:
        raise ValueError(f"style noise must be one of {NOISE_CHOICES}, got {noise!r}.")
    if noise == "none":
        return generator.synthesis(ws, "none").float().cpu()
    return generator.synthesis(ws, noise=fixed_noise(generator, len(ws), seed)).float().cpu()


def blank_like(images: Tensor, value_range: Sequence[float] | None) -> Tensor:
    """A white cell (the top of the value range) for the empty corner of a grid."""
    return torch.full_like(images[:1], 1.0 if value_range is None else float(value_range[1]))


@torch.no_grad()
def style_mixing_grid(generator: nn.Module, row_seeds: Sequence[int], column_seeds: Sequence[int],
                      crossover: int | None = None, psi: float = 1.0, noise: str = "fixed",
                      seed: int = 0) -> tuple[Tensor, int]:
    """A style-mixing figure (StyleGAN, figure 3) as ``(images, nrow)`` for ``save_grid``.

    The first row holds the column sources, the first column the row sources (the corner is blank);
    cell (i, j) takes its first ``crossover`` styles (coarse: pose, shape) from row seed i and the
    rest (fine: texture, colour) from column seed j. ``crossover`` defaults to ``default_crossover``.
    """
    require_style_based(generator, "style_mixing")
    if not row_seeds or not column_seeds:
        raise ValueError("style mixing needs at least one row seed and one column seed.")
    active = int(getattr(generator, "active_ws", generator.num_ws))
    crossover = default_crossover(generator) if crossover is None else int(crossover)
    if not 1 <= crossover < active:
        raise ValueError(f"style_mixing_crossover must be in [1, {active - 1}]: this generator uses {active} styles "
                         f"at its resolution and the columns must keep at least one; got {crossover}.")
    rows, columns = seed_styles(generator, row_seeds, psi), seed_styles(generator, column_seeds, psi)
    n_rows, n_cols = len(rows), len(columns)
    mixed = generator.mix(rows.repeat_interleave(n_cols, 0), columns.repeat(n_rows, 1, 1), crossover)
    row_images, column_images = render(generator, rows, noise, seed), render(generator, columns, noise, seed)
    cells = render(generator, mixed, noise, seed).view(n_rows, n_cols, *row_images.shape[1:])
    grid = [blank_like(column_images, generator.output_range), column_images]
    for i in range(n_rows):
        grid += [row_images[i:i + 1], cells[i]]
    return torch.cat(grid), n_cols + 1


@torch.no_grad()
def truncation_sweep_grid(generator: nn.Module, seeds: Sequence[int], psis: Sequence[float], noise: str = "fixed",
                          seed: int = 0) -> tuple[Tensor, int]:
    """Rows = seeds, columns = truncation psis, as ``(images, nrow)``: psi 1 is the untruncated sample,
    0 the mean image (the same in every row), negative psis the "anti-face" across the mean."""
    require_style_based(generator, "truncation_sweep")
    if not seeds or not psis:
        raise ValueError("a truncation sweep needs at least one seed and one psi.")
    styles = seed_styles(generator, seeds)  # (R, num_ws, w_dim)
    ws = torch.stack([generator.truncate(styles, float(psi)) for psi in psis], dim=1)  # (R, P, num_ws, w_dim)
    return render(generator, ws.flatten(0, 1), noise, seed), len(psis)
