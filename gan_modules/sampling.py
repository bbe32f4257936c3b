"""Sampling and controllable generation: batched sampling, latent interpolation, latent arithmetic.

Pure tensor functions over a generator (conditional or not); ``generate.py`` turns them into files.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from gan_modules.nets.conditional import call_generator


def seed_latent(seed: int, z_dim: int) -> Tensor:
    """The latent ``(z_dim,)`` that ``seed`` names: the same seed always gives the same z."""
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(int(seed)))


def chunked_latents(n: int, z_dim: int, seed: int, chunk_size: int = 500) -> Tensor:
    """``n`` latents ``(n, z_dim)`` from ``seed``, drawn ``chunk_size`` at a time.

    The values depend on the chunking (one ``randn`` of all ``n`` differs), so generate.py and
    evaluate.py both draw here: the same seed and chunk size always give the same z.
    """
    noise = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.cat([torch.randn(min(chunk_size, n - start), z_dim, generator=noise)
                      for start in range(0, n, chunk_size)])


@torch.no_grad()
def sample_in_batches(generator: nn.Module, z: Tensor, labels: Tensor | None = None, batch_size: int = 500,
                      device: torch.device | str = "cpu") -> Tensor:
    """``G(z)`` (or ``G(z, y)``) in chunks of ``batch_size`` on ``device``; float32 on the CPU."""
    chunks = []
    for start in range(0, len(z), batch_size):
        y = None if labels is None else labels[start:start + batch_size].to(device)
        chunks.append(call_generator(generator, z[start:start + batch_size].to(device), y).float().cpu())
    return torch.cat(chunks)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read (then nothing is checked)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- interpolation ----------------------------------------------------------------------------
def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Straight line ``(1 - t) a + t b`` for each ``t``: ``(len(t), *a.shape)``."""
    t = t.view(-1, *([1] * a.dim()))
    return (1.0 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation (Shoemake 1985), the path White (2016) recommends for Gaussian latents.

    Moves along the great circle between the directions of ``a`` and ``b`` while the norm goes
    linearly from ``|a|`` to ``|b|`` (exactly constant when they are equal): a straight line
    instead cuts through the low-norm interior, where N(0, I) latents of high dimension almost never
    lie. For (anti)parallel ``a`` and ``b`` the great circle is undefined and this falls back to lerp.
    """
    t = t.view(-1, *([1] * a.dim())).to(a.dtype)
    norm_a, norm_b = a.norm(), b.norm()
    cos = (torch.dot(a.flatten(), b.flatten()) / (norm_a * norm_b).clamp_min(eps)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin_omega = torch.sin(omega)
    if sin_omega.abs() < 1e-6:
        return lerp(a, b, t.view(-1))
    unit_a, unit_b = a / norm_a, b / norm_b
    direction = (torch.sin((1.0 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin_omega
    return direction * ((1.0 - t) * norm_a + t * norm_b)


def interpolation_path(latents: Tensor, steps: int, spherical: bool = False) -> Tensor:
    """``steps`` points (both ends included) on each segment between consecutive latents.

    Returns ``(len(latents) - 1, steps, z_dim)``: row ``i`` runs from ``latents[i]`` to
    ``latents[i + 1]``, so consecutive rows share an endpoint.
    """
    if latents.dim() != 2 or len(latents) < 2:
        raise ValueError(f"Interpolation needs at least two latents (k, z_dim), got shape {list(latents.shape)}.")
    if steps < 2:
        raise ValueError(f"Interpolation needs steps >= 2 (both endpoints), got {steps}.")
    t = torch.linspace(0.0, 1.0, steps)
    path = slerp if spherical else lerp
    return torch.stack([path(a, b, t) for a, b in zip(latents[:-1], latents[1:])])


def animation_frames(path: Tensor) -> Tensor:
    """The whole path as one sequence, each shared endpoint once: ``(segments * (steps - 1) + 1, ...)``."""
    frames = [segment[:-1] for segment in path] + [path[-1, -1:]]
    return torch.cat(frames)


# --- latent arithmetic ------------------------------------------------------------------------
Classifier = Callable[[Tensor], Tensor]


def class_exemplars(z: Tensor, samples: Tensor, classify: Classifier, classes: list[int], count: int) -> dict[int, Tensor]:
    """For each class, the ``count`` latents whose samples ``classify`` assigns to it most confidently.

    ``classify`` maps samples to class probabilities ``(N, K)``. Confidence picks clear examples of
    the attribute, as Radford et al. picked three exemplars by eye; the error names the fix when
    too few samples land in a class.
    """
    probs = torch.cat([classify(chunk) for chunk in samples.split(500)])
    predicted = probs.argmax(1)
    chosen: dict[int, Tensor] = {}
    for c in classes:
        if not 0 <= c < probs.shape[1]:
            raise ValueError(f"Class {c} is out of range: the classifier has {probs.shape[1]} classes, 0 to {probs.shape[1] - 1}.")
        members = (predicted == c).nonzero().view(-1)
        if len(members) < count:
            raise ValueError(
                f"Only {len(members)} of {len(z)} samples were classified as class {c}, fewer than the {count} "
                "exemplars needed: raise arithmetic_pool, lower arithmetic_exemplars, or train the model longer."
            )
        best = members[probs[members, c].argsort(descending=True)[:count]]
        chosen[c] = z[best]
    return chosen


def latent_arithmetic(z_a: Tensor, z_b: Tensor, z_c: Tensor) -> Tensor:
    """``mean(z_a) - mean(z_b) + mean(z_c)``: averaging several exemplars first keeps what they share
    (the attribute) and cancels what they do not, which single latents do not (Radford et al. 2016)."""
    return z_a.mean(0) - z_b.mean(0) + z_c.mean(0)


# --- command-line values ----------------------------------------------------------------------
def whole_number(value, key: str, minimum: int | None = None) -> int:
    """``value`` as an int, or a ValueError naming ``key``: 1.7 is refused (never rounded to a class or
    a count), as are strings and booleans; 3.0 is accepted as 3."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{key} must be a whole number, got {value!r}" + (f" (e.g. {key}={minimum})" if minimum is not None else ""))
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {number}")
    return number


def whole_numbers(values, key: str, minimum: int | None = None) -> list[int]:
    """Each item of a list option as an int (see :func:`whole_number`); the error names the item."""
    numbers = []
    for i, value in enumerate(values):
        try:
            numbers.append(whole_number(value, key, minimum))
        except ValueError as err:
            raise ValueError(f"{key} takes whole numbers{'' if minimum is None else f' >= {minimum}'}, e.g. "
                             f"{key}=[0,3,7]; item {i} is {value!r}") from err
    return numbers
