"""generate.py on a StyleGAN checkpoint: truncation, the style-mixing grid, the truncation sweep."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_modules.checkpoints import load_generator
from gan_modules.style_sampling import render, seed_styles, style_mixing_grid, truncation_sweep_grid
from gan_modules.training import train
from generate import main as generate_main
from tests.conftest import FAST, TINY_DIGITS, compose_train

TINY_STYLEGAN = ["model=stylegan", "model.generator.z_dim=8", "model.generator.w_dim=8",
                 "model.generator.mapping_layers=2", "model.generator.channel_base=32", "model.generator.max_channels=8",
                 "model.discriminator.channel_base=32", "model.discriminator.max_channels=8"]
CELL = 8 + 2  # 8x8 digits plus save_grid's 2-pixel padding


def grid_size(rows: int, columns: int) -> tuple[int, int]:
    return columns * CELL + 2, rows * CELL + 2


def cells(path: Path, rows: int, columns: int) -> np.ndarray:
    """The PNG cut back into its (rows, columns, 8, 8) cells."""
    array = np.asarray(Image.open(path).convert("L"), dtype=np.int16)
    return np.stack([np.stack([array[2 + r * CELL: r * CELL + CELL, 2 + c * CELL: c * CELL + CELL]
                               for c in range(columns)]) for r in range(rows)])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny StyleGAN trained for 5 generator steps on the 8x8 digits (w_avg has moved off zero)."""
    out = tmp_path_factory.mktemp("stylegan")
    train(compose_train([*FAST, *TINY_DIGITS, "debug=default", "callbacks.samples=null", *TINY_STYLEGAN], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlp")
    train(compose_train([*FAST, *TINY_DIGITS, "debug=default", "model=mlp_small", "callbacks.samples=null"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def generator(checkpoint):
    generator, _ = load_generator(checkpoint)
    assert generator.w_avg.abs().max() > 0  # the tracked mean travelled in the checkpoint
    return generator


def test_style_mixing_png_has_a_header_row_and_column(checkpoint, tmp_path):
    path = generate_main([f"checkpoint={checkpoint}", f"style_mixing={tmp_path / 'mix.png'}",
                          "style_mixing_rows=[1,2,3]", "style_mixing_columns=[4,5,6,7]"])
    assert Image.open(path).size == grid_size(3 + 1, 4 + 1)
    grid = cells(path, 4, 5)
    assert (grid[0, 0] == 255).all()  # the blank corner
    again = generate_main([f"checkpoint={checkpoint}", f"style_mixing={tmp_path / 'again.png'}",
                           "style_mixing_rows=[1,2,3]", "style_mixing_columns=[4,5,6,7]"])
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path)))  # fixed noise: reproducible


def test_style_mixing_cells_take_coarse_styles_from_rows_and_fine_from_columns(generator):
    rows, columns = [1, 2, 3], [4, 5]
    images, nrow = style_mixing_grid(generator, rows, columns, crossover=2, seed=7)
    assert nrow == 3 and images.shape == (4 * 3, 1, 8, 8)
    grid = images.view(4, 3, 1, 8, 8)
    row_ws, column_ws = seed_styles(generator, rows), seed_styles(generator, columns)
    torch.testing.assert_close(grid[0, 1:], render(generator, column_ws, seed=7))  # header row: column sources
    torch.testing.assert_close(grid[1:, 0], render(generator, row_ws, seed=7))  # header column: row sources
    expected = render(generator, torch.cat([row_ws[2:3, :2], column_ws[1:2, 2:]], dim=1), seed=7)
    torch.testing.assert_close(grid[3, 2], expected[0], atol=1e-5, rtol=0)  # row seed 3's coarse, 5's fine
    body = grid[1:, 1:]
    assert (body[:, 0] - body[:, 1]).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # columns matter
    assert (body[0] - body[1]).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # rows matter


def test_truncation_sweep_psi_zero_column_is_the_mean_image(checkpoint, generator, tmp_path):
    psis = [1.0, 0.5, 0.0, -1.0]
    path = generate_main([f"checkpoint={checkpoint}", f"truncation_sweep={tmp_path / 'psi.png'}",
                          "truncation_seeds=[1,2,3]", f"truncation_psis={psis}"])
    assert Image.open(path).size == grid_size(3, 4)
    grid = cells(path, 3, 4)
    assert all(np.array_equal(grid[0, 2], grid[r, 2]) for r in (1, 2))  # psi 0: every seed gives the mean
    assert not np.array_equal(grid[0, 0], grid[1, 0])  # psi 1: the seeds differ
    images, nrow = truncation_sweep_grid(generator, [1, 2, 3], psis, seed=0)
    mean = render(generator, generator.broadcast(generator.w_avg[None]), seed=0)
    torch.testing.assert_close(images.view(3, 4, 1, 8, 8)[:, 2], mean.expand(3, -1, -1, -1), atol=1e-5, rtol=0)


def test_truncation_psi_narrows_ordinary_samples(checkpoint, tmp_path):
    def spread(psi: float) -> float:
        out = tmp_path / f"samples_{psi}.npz"
        generate_main([f"checkpoint={checkpoint}", "num_samples=64", f"output={out}", f"truncation_psi={psi}"])
        return float(np.load(out)["arr_0"].astype(np.float64).std(axis=0).mean())

    full, half, none = spread(1.0), spread(0.5), spread(0.0)
    assert none < 0.2 * full and none < half < full


def test_style_options_refuse_a_generator_without_styles(mlp_checkpoint, tmp_path):
    ckpt = f"checkpoint={mlp_checkpoint}"
    with pytest.raises(SystemExit, match="style-based generator.*MLP"):
        generate_main([ckpt, f"style_mixing={tmp_path / 'm.png'}"])
    with pytest.raises(SystemExit, match="style-based generator"):
        generate_main([ckpt, f"truncation_sweep={tmp_path / 't.png'}"])
    with pytest.raises(SystemExit, match="truncation_psi=0.7 needs a style-based generator"):
        generate_main([ckpt, "truncation_psi=0.7", f"output={tmp_path / 's.npz'}"])
    generate_main([ckpt, "num_samples=4", f"output={tmp_path / 'ok.npz'}"])  # psi 1 stays fine


def test_style_options_are_checked(checkpoint, tmp_path):
    ckpt = f"checkpoint={checkpoint}"
    with pytest.raises(SystemExit, match=r"style_mixing_crossover must be in \[1, 3\]"):
        generate_main([ckpt, f"style_mixing={tmp_path / 'm.png'}", "style_mixing_crossover=4"])
    with pytest.raises(SystemExit, match="one of .*style_mixing, truncation_sweep"):
        generate_main([ckpt, f"style_mixing={tmp_path / 'm.png'}", f"truncation_sweep={tmp_path / 't.png'}"])
    with pytest.raises(SystemExit, match="takes a list"):
        generate_main([ckpt, f"style_mixing={tmp_path / 'm.png'}", "style_mixing_rows=3"])
    with pytest.raises(SystemExit, match="truncation_psis"):
        generate_main([ckpt, f"truncation_sweep={tmp_path / 't.png'}", "truncation_psi=0.5"])
    with pytest.raises(SystemExit, match="style_noise"):
        generate_main([ckpt, f"style_mixing={tmp_path / 'm.png'}", "style_noise=random"])
