"""Augmenting what the discriminator sees, for training on little data (``augment=`` config group).

An ``Augmentation`` is applied by the objective (``objectives.py``) to every batch before D judges it:
reals and fakes alike, in D's phase and in G's phase, and inside the input-gradient penalties (which
then differentiate through it). It must therefore be differentiable with respect to its input.
``observe`` lets an adaptive pipeline read D's outputs on the (augmented) reals of each D step;
what it returns from ``statistics`` is logged every step. Its state (e.g. ADA's probability) lives in
buffers, so it is saved in checkpoints with the module and restored on resume.

Here: ``NoAugmentation`` (augment=none), ``DiffAugment`` (augment=diffaugment) and
``AdaptiveAugmentation`` (augment=ada); docs/augmentation.md describes their options.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Augmentation(nn.Module):
    """The interface; this base class changes nothing (``augment=none``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def observe(self, real_logits: Tensor, step: int) -> None:
        """D's logits on this D step's augmented reals (detached); ``step`` counts D steps."""

    def statistics(self) -> dict[str, Tensor]:
        """Values to log every step (detached tensors)."""
        return {}

    def check_data(self, sample_shape: tuple[int, ...]) -> None:
        """Raise a ValueError naming the fix when this augmentation cannot work on samples of this shape
        (called before training by ``build.validate_setup``)."""


class NoAugmentation(Augmentation):
    """D sees the data as they are (the default)."""


# --- helpers shared by the two pipelines --------------------------------------------------------

def _check_images(name: str, sample_shape: tuple[int, ...]) -> None:
    """``name`` transforms images (C, H, W); anything else is refused before training."""
    if len(sample_shape) != 3:
        raise ValueError(f"augment={name} transforms images of shape (channels, height, width), but the data's "
                         f"samples have shape {list(sample_shape)} (not images, e.g. 2-D points): use augment=none.")


def _per_sample(x: Tensor, values: Tensor) -> Tensor:
    """``values`` of shape (B,) reshaped to broadcast over a (B, C, H, W) batch, in ``x``'s dtype."""
    return values.to(x.dtype).view(-1, 1, 1, 1)


def _channel_mean(x: Tensor) -> Tensor:
    """Each pixel's grey level (mean over channels), the axis saturation scales around."""
    return x.mean(dim=1, keepdim=True)


def _image_mean(x: Tensor) -> Tensor:
    """Each image's mean value, the level contrast scales around (whatever the data range)."""
    return x.mean(dim=(1, 2, 3), keepdim=True)


def _box_mask(x: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """1 outside, 0 inside a box of ``height`` x ``width`` pixels at per-sample corners (rows may reach
    past the border: the box is then cut by it), shaped (B, 1, H, W) in ``x``'s dtype."""
    rows = torch.arange(x.shape[2], device=x.device).view(1, -1, 1)
    cols = torch.arange(x.shape[3], device=x.device).view(1, 1, -1)
    top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return (~inside).to(x.dtype).unsqueeze(1)


# --- DiffAugment --------------------------------------------------------------------------------

DIFF_AUGMENT_POLICIES = ("color", "translation", "cutout")


class DiffAugment(Augmentation):
    """DiffAugment (Zhao et al. 2020): the same random, differentiable transforms on every real and
    every fake D sees, each sample drawing its own parameters, every time.

    Args:
        policy: which transforms, applied in this order:
            ``color``: brightness (add U(-0.5, 0.5)), saturation (scale each pixel's distance to its
            grey level by U(0, 2); colour images only) and contrast (scale the distance to the image's
            mean by U(0.5, 1.5));
            ``translation``: shift by a whole number of pixels, up to ``translation_ratio`` of the size
            each way, filling with zeros;
            ``cutout``: zero a square of ``cutout_ratio`` of the size at a random place (cut by the border).
        translation_ratio: the largest shift as a fraction of the height and width (the paper: 1/8).
        cutout_ratio: the side of the cut-out square as a fraction of the height and width (the paper: 1/2).
    """

    def __init__(self, policy: Sequence[str] = DIFF_AUGMENT_POLICIES, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5) -> None:
        super().__init__()
        policy = [policy] if isinstance(policy, str) else list(policy)
        unknown = [p for p in policy if p not in DIFF_AUGMENT_POLICIES]
        if unknown:
            raise ValueError(f"model.loss.augment.policy: unknown {unknown}; choose from {list(DIFF_AUGMENT_POLICIES)}.")
        for key, ratio in (("translation_ratio", translation_ratio), ("cutout_ratio", cutout_ratio)):
            if not 0.0 <= float(ratio) <= 1.0:
                raise ValueError(f"model.loss.augment.{key} must be in [0, 1], got {ratio}.")
        self.policy = policy
        self.translation_ratio, self.cutout_ratio = float(translation_ratio), float(cutout_ratio)

    def forward(self, x: Tensor) -> Tensor:
        for name in self.policy:
            x = getattr(self, name)(x)
        return x

    def color(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        x = x + _per_sample(x, torch.rand(batch, device=x.device) - 0.5)
        # Saturation needs colour: a grayscale image equals its grey level, so it is skipped there.
        if x.shape[1] == 3:
            grey = _channel_mean(x)
            x = (x - grey) * _per_sample(x, 2 * torch.rand(batch, device=x.device)) + grey
        mean = _image_mean(x)
        return (x - mean) * _per_sample(x, torch.rand(batch, device=x.device) + 0.5) + mean

    def translation(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        max_rows, max_cols = round(height * self.translation_ratio), round(width * self.translation_ratio)
        shift_rows = torch.randint(-max_rows, max_rows + 1, (batch, 1, 1), device=x.device)
        shift_cols = torch.randint(-max_cols, max_cols + 1, (batch, 1, 1), device=x.device)
        return _shift(x, shift_rows, shift_cols)

    def cutout(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        box_h, box_w = round(height * self.cutout_ratio), round(width * self.cutout_ratio)
        # The box's centre is any pixel, so the box may stick out of the image.
        top = torch.randint(0, height, (batch,), device=x.device) - box_h // 2
        left = torch.randint(0, width, (batch,), device=x.device) - box_w // 2
        return x * _box_mask(x, top, left, box_h, box_w)

    def check_data(self, sample_shape: tuple[int, ...]) -> None:
        _check_images("diffaugment", sample_shape)

    def extra_repr(self) -> str:
        return f"policy={self.policy}, translation_ratio={self.translation_ratio:g}, cutout_ratio={self.cutout_ratio:g}"


def _shift(x: Tensor, shift_rows: Tensor, shift_cols: Tensor) -> Tensor:
    """Each image moved by whole pixels (per-sample shifts of shape (B, 1, 1)), zeros coming in: an exact
    gather, so the gradient reaches every input pixel that stays in view."""
    batch, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, -1, 1) - shift_rows  # (B, H, 1): source row
    cols = torch.arange(width, device=x.device).view(1, 1, -1) - shift_cols  # (B, 1, W): source column
    in_view = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # (B, H, W)
    samples = torch.arange(batch, device=x.device).view(-1, 1, 1)
    moved = x.permute(0, 2, 3, 1)[samples, rows.clamp(0, height - 1), cols.clamp(0, width - 1)]  # (B, H, W, C)
    return moved.permute(0, 3, 1, 2) * in_view.unsqueeze(1).to(x.dtype)


# --- ADA ----------------------------------------------------------------------------------------

# The transforms of ADA's "bgc" pipeline that this project has, in the order they are applied, then
# cutout. Geometric ones are composed into one warp per image (one resampling, less blur).
GEOMETRIC_TRANSFORMS = ("xflip", "rot90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR_TRANSFORMS = ("brightness", "contrast", "saturation")
ADA_TRANSFORMS = (*GEOMETRIC_TRANSFORMS, *COLOR_TRANSFORMS, "cutout")
# ADA's default: every transform but cutout ("bgc", the paper's best set on its data sets).
ADA_DEFAULT_TRANSFORMS = (*GEOMETRIC_TRANSFORMS, *COLOR_TRANSFORMS)
# Above about this p an augmentation may leak: D sees mostly augmented reals, so G is rewarded for
# making augmented-looking images (e.g. rotated ones with rot90). ADA's adaptive p stays below it
# when the data are not too few; a fixed p above it is warned about.
LEAK_SAFE_P = 0.8


class AdaptiveAugmentation(Augmentation):
    """ADA (Karras et al. 2020): each transform is applied to each image with probability ``p``, and
    ``p`` follows how much D overfits.

    Every ``interval`` D steps, ``r_t = E[sign(D(augmented reals))]`` over those steps is compared with
    ``target``: above it (D is too sure of the reals) p rises, below it p falls, by ``images seen in
    the interval / adjust_speed_images`` each time, within [0, 1]. ``p``, the running sums and the
    last ``r_t`` are buffers: checkpoints keep them and an exact resume continues identically.

    Args:
        p: a fixed probability in [0, 1] (no adjustment), or None to adapt it.
        initial_p: where an adaptive p starts.
        target: the r_t that p is steered to (the paper: 0.6).
        interval: adjust p every this many D steps (the paper: 4).
        adjust_speed_images: how many images it takes p to go from 0 to 1 when r_t stays above the
            target (the paper: 500k; see conf/augment/ada.yaml for this project's default).
        transforms: which of ``ADA_TRANSFORMS`` to use (default: all but cutout, ADA's "bgc"), each
            applied with probability p:
            xflip (mirror left-right, half the time), rot90 (0, 90, 180 or 270 degrees),
            xint (whole-pixel shift up to 1/8 of the size), scale (isotropic, log2-normal std 0.2),
            rotate (any angle), aniso (stretch one axis and shrink the other, log2-normal std 0.2),
            xfrac (sub-pixel shift, normal std 1/8 of the size), brightness (add normal std 0.2),
            contrast (scale around the image's mean, log2-normal std 0.5), saturation (scale around
            each pixel's grey level, log2-normal std 1; colour images only), cutout (zero a box half
            the size at a random place).
    """

    # ADA's strengths (their "bgc" defaults and cutout's size).
    TRANSLATE_MAX, SCALE_STD, ANISO_STD, FRAC_STD = 0.125, 0.2, 0.2, 0.125
    BRIGHTNESS_STD, CONTRAST_STD, SATURATION_STD, CUTOUT_SIZE = 0.2, 0.5, 1.0, 0.5

    def __init__(self, p: float | None = None, initial_p: float = 0.0, target: float = 0.6, interval: int = 4,
                 adjust_speed_images: float = 100_000,
                 transforms: Sequence[str] = ADA_DEFAULT_TRANSFORMS) -> None:
        super().__init__()
        for key, value in (("p", p), ("initial_p", initial_p), ("target", target)):
            if value is not None and (isinstance(value, bool) or not 0.0 <= float(value) <= 1.0):
                raise ValueError(f"model.loss.augment.{key} must be a probability in [0, 1]"
                                 f"{' or null (adaptive)' if key == 'p' else ''}, got {value!r}.")
        if isinstance(interval, bool) or not hasattr(interval, "__index__") or int(interval) < 1:
            raise ValueError(f"model.loss.augment.interval must be an integer >= 1 (D steps), got {interval!r}.")
        if not float(adjust_speed_images) > 0:
            raise ValueError(f"model.loss.augment.adjust_speed_images must be > 0, got {adjust_speed_images}.")
        transforms = [transforms] if isinstance(transforms, str) else list(transforms)
        unknown = [t for t in transforms if t not in ADA_TRANSFORMS]
        if unknown:
            raise ValueError(f"model.loss.augment.transforms: unknown {unknown}; choose from {list(ADA_TRANSFORMS)}.")
        self.adaptive = p is None
        self.target, self.interval = float(target), int(interval)
        self.adjust_speed_images = float(adjust_speed_images)
        self.transforms = [t for t in ADA_TRANSFORMS if t in transforms]  # the pipeline's order
        if not self.adaptive and float(p) > LEAK_SAFE_P:
            warnings.warn(f"model.loss.augment.p={p} > {LEAK_SAFE_P}: G may learn to produce augmented-looking "
                          "images (the augmentation leaks); ADA keeps p below about 0.8.", stacklevel=2)
        # A fixed p is the config's, not the checkpoint's: it is then left out of the state dict, so
        # that a resume with another fixed p (or from an adaptive run) uses the one given now.
        self.register_buffer("p", torch.tensor(float(initial_p if self.adaptive else p)), persistent=self.adaptive)
        # The running sum of sign(D(real)) and its count since the last adjustment, and the last r_t.
        self.register_buffer("sign_sum", torch.zeros(()))
        self.register_buffer("sign_count", torch.zeros(()))
        self.register_buffer("rt", torch.zeros(()))

    # --- adjusting p ---
    @torch.no_grad()
    def observe(self, real_logits: Tensor, step: int) -> None:
        self.sign_sum += real_logits.detach().float().sign().sum()
        self.sign_count += real_logits.numel()
        if (step + 1) % self.interval:
            return
        self.rt.copy_(self.sign_sum / self.sign_count.clamp(min=1))
        if self.adaptive:
            # One logit per image (with PacGAN packing, per group): the count is the images seen.
            change = torch.sign(self.rt - self.target) * self.sign_count / self.adjust_speed_images
            self.p.copy_((self.p + change).clamp(0.0, 1.0))
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def statistics(self) -> dict[str, Tensor]:
        return {"augment_p": self.p.detach().clone(), "augment_rt": self.rt.detach().clone()}

    def check_data(self, sample_shape: tuple[int, ...]) -> None:
        _check_images("ada", sample_shape)

    # --- the pipeline ---
    def forward(self, x: Tensor) -> Tensor:
        if any(t in GEOMETRIC_TRANSFORMS for t in self.transforms):
            x = self._warp(x)
        batch, device = x.shape[0], x.device
        # Each transform leaves the images it does not pick exactly as they are (torch.where), so p = 0
        # is the identity; p stays on the device (no synchronisation).
        if "brightness" in self.transforms:
            x = torch.where(self._picked(x), x + _per_sample(x, torch.randn(batch, device=device) * self.BRIGHTNESS_STD), x)
        if "contrast" in self.transforms:
            scale = _per_sample(x, torch.exp2(torch.randn(batch, device=device) * self.CONTRAST_STD))
            mean = _image_mean(x)
            x = torch.where(self._picked(x), (x - mean) * scale + mean, x)
        # Saturation needs colour: a grayscale image equals its grey level, so it is skipped there.
        if "saturation" in self.transforms and x.shape[1] == 3:
            scale = _per_sample(x, torch.exp2(torch.randn(batch, device=device) * self.SATURATION_STD))
            grey = _channel_mean(x)
            x = torch.where(self._picked(x), (x - grey) * scale + grey, x)
        if "cutout" in self.transforms:
            x = x * self._cutout_mask(x)
        return x

    def _chosen(self, batch: int, device: torch.device, probability: Tensor | None = None) -> Tensor:
        """Which images of the batch get a transform: each with probability p (or ``probability``)."""
        return torch.rand(batch, device=device) < (self.p if probability is None else probability)

    def _picked(self, x: Tensor) -> Tensor:
        return self._chosen(x.shape[0], x.device).view(-1, 1, 1, 1)

    def _cutout_mask(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        centre = torch.rand(batch, 2, device=x.device)  # (row, column) as fractions of the size
        rows = (torch.arange(height, device=x.device) + 0.5) / height
        cols = (torch.arange(width, device=x.device) + 0.5) / width
        inside = (((rows.view(1, -1, 1) - centre[:, 0].view(-1, 1, 1)).abs() < self.CUTOUT_SIZE / 2)
                  & ((cols.view(1, 1, -1) - centre[:, 1].view(-1, 1, 1)).abs() < self.CUTOUT_SIZE / 2))
        cut = inside & self._chosen(batch, x.device).view(-1, 1, 1)
        return (~cut).to(x.dtype).unsqueeze(1)

    def _warp(self, x: Tensor) -> Tensor:
        """The geometric transforms, composed into one affine map per image and resampled once
        (bilinear, reflection padding, as ADA pads by reflection); images that draw none are kept as
        they are."""
        batch, _, height, width = x.shape
        device = x.device
        # Built as the inverse map (output pixel -> input pixel) in pixel units about the image's
        # centre, by multiplying each transform's inverse on the right, as ADA does.
        inverse = torch.eye(3, device=device).repeat(batch, 1, 1)
        warped = torch.zeros(batch, dtype=torch.bool, device=device)

        def then(chosen: Tensor, matrix: Tensor) -> None:
            nonlocal inverse, warped
            inverse = inverse @ torch.where(chosen.view(-1, 1, 1), matrix, torch.eye(3, device=device))
            warped = warped | chosen

        if "xflip" in self.transforms:
            mirror = torch.randint(0, 2, (batch,), device=device) == 1
            then(self._chosen(batch, device) & mirror, _scale2d(-torch.ones(batch, device=device), torch.ones(batch, device=device)))
        if "rot90" in self.transforms:
            quarter_turns = torch.randint(0, 4, (batch,), device=device)
            # cos and sin of the inverse rotation looked up, so that the matrix is exact.
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[quarter_turns]
            sin = -torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[quarter_turns]
            then(self._chosen(batch, device), _rotate2d(cos, sin))
        if "xint" in self.transforms:
            shift = (torch.rand(batch, 2, device=device) * 2 - 1) * self.TRANSLATE_MAX
            then(self._chosen(batch, device), _translate2d(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height)))
        if "scale" in self.transforms:
            factor = torch.exp2(torch.randn(batch, device=device) * self.SCALE_STD)
            then(self._chosen(batch, device), _scale2d(1 / factor, 1 / factor))
        # Arbitrary rotation is drawn twice (around the anisotropic scaling, as ADA does), each time
        # with the probability that makes "rotated at least once" happen with probability p.
        rotate_probability = 1 - torch.sqrt((1 - self.p).clamp(min=0))
        for turn in ("before", "after"):
            if turn == "after" and "aniso" in self.transforms:
                factor = torch.exp2(torch.randn(batch, device=device) * self.ANISO_STD)
                then(self._chosen(batch, device), _scale2d(1 / factor, factor))
            if "rotate" in self.transforms:
                angle = (torch.rand(batch, device=device) * 2 - 1) * math.pi
                then(self._chosen(batch, device, rotate_probability), _rotate2d(torch.cos(-angle), torch.sin(-angle)))
        if "xfrac" in self.transforms:
            shift = torch.randn(batch, 2, device=device) * self.FRAC_STD
            then(self._chosen(batch, device), _translate2d(-shift[:, 0] * width, -shift[:, 1] * height))
        # affine_grid works in coordinates where the image spans [-1, 1] (align_corners=False):
        # pixel units about the centre are those times half the size.
        to_pixels = torch.diag(torch.tensor([width / 2, height / 2, 1.0], device=device))
        to_unit = torch.diag(torch.tensor([2 / width, 2 / height, 1.0], device=device))
        theta = (to_unit @ inverse @ to_pixels)[:, :2].to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        resampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return torch.where(warped.view(-1, 1, 1, 1), resampled, x)

    def extra_repr(self) -> str:
        mode = "adaptive" if self.adaptive else "fixed"
        return (f"{mode}, p={float(self.p):g}, target={self.target:g}, interval={self.interval}, "
                f"adjust_speed_images={self.adjust_speed_images:g}, transforms={self.transforms}")


def _matrices(rows: list[list[Tensor | float]], like: Tensor) -> Tensor:
    """(B, 3, 3) matrices from a 3x3 layout of per-sample values (B,) and constants."""
    return torch.stack([torch.stack([v if isinstance(v, Tensor) else torch.full_like(like, v) for v in row], -1)
                        for row in rows], -2)


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    return _matrices([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], sx)


def _rotate2d(cos: Tensor, sin: Tensor) -> Tensor:
    return _matrices([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], cos)


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    return _matrices([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], tx)
