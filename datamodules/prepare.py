"""Prepare an image folder for training at scale: one zip archive, or tar shards for streaming.

    python -m datamodules.prepare SRC DEST.zip --resolution 256 [--transform center-crop|pad]
                                  [--max-images N] [--overwrite]
    python -m datamodules.prepare SRC DEST_FOLDER --format shards --resolution 256 [--shard-size 1000]

SRC is a folder of images (png, jpg, jpeg, bmp, webp, gif; searched recursively, hidden files
skipped). When every image lies in a sub-folder, the sorted first-level sub-folder names become the
labels 0..K-1; otherwise the data is unlabelled.

Each image is made square (``center-crop``: the largest central square; ``pad``: centred on a black
square canvas) and resized to ``resolution`` with PIL's LANCZOS filter: it low-passes in proportion
to the scale factor, so large photos shrink without aliasing, and it is the default of NVlabs'
dataset_tool, so archives made here and there hold comparable pixels.

Colour: when every source image is grayscale the output is grayscale (mode L); as soon as one is in
colour, all are written as RGB (grayscale images replicated to three channels, alpha dropped), so
the archive has one channel count.

``--format zip`` writes NVlabs' layout (read by ``dataset=image_zip`` and by stylegan2-ada's
training code): PNG members ``00000/img00000000.png``, ``00000/img00000001.png``, ... (the folder is
the first five of the index's eight digits, so a new one every 1000 images) and ``dataset.json`` holding
``{"labels": [[member, label], ...]}`` or ``{"labels": null}``; members are stored, not deflated
(PNG is compressed already). ``--format shards`` writes WebDataset tar shards for
``dataset=image_stream`` (see datamodules/streaming.py).

Every image is opened and checked before anything is written; every file goes to a temporary name
in its own folder and is renamed into place, so an interrupted run leaves no half-written dataset.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.base import CorruptDatasetError, DatasetNotFoundError
from datamodules.image_files import IMAGE_EXTENSIONS, scan_images
from gan_modules.atomic_files import OutputPathError, atomic_write, atomic_write_text, check_output_path

TRANSFORMS = ("center-crop", "pad")
FORMATS = ("zip", "shards")
#: The shard folder's index (json), written last: a folder without it is an unfinished preparation.
SHARD_INDEX = "shards.json"
SHARD_FORMAT_VERSION = 1
#: PIL modes that hold one gray channel (after conversion to L).
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"})
# zlib level of the PNGs: 1 is nearly as fast to decode as uncompressed PNG and about half the size.
PNG_COMPRESS_LEVEL = 1
# Members carry a fixed date, so that the same images give a byte-identical archive.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SourceImages:
    files: list[Path]
    labels: list[int] | None
    class_names: list[str]
    mode: str  # "L" or "RGB", what every output image is written as


def member_name(index: int) -> str:
    """NVlabs' member name of the ``index``-th image: ``00012/img00012345.png``."""
    digits = f"{index:08d}"
    return f"{digits[:5]}/img{digits}.png"


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def scan_source(src: Path, max_images: int | None) -> SourceImages:
    """The images to write (sorted; the first ``max_images``), their labels and the output mode.
    Opens every image once (header and data check) so that a bad file stops the run before any output."""
    if not src.exists():
        raise DatasetNotFoundError(f"SRC {src} does not exist; give the folder of your images")
    if not src.is_dir():
        raise DatasetNotFoundError(f"SRC {src} is not a folder; give the folder of your images")
    files = scan_images(src)
    if not files:
        raise DatasetNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {src}")
    labelled = all(f.parent != src for f in files)
    class_names = sorted({f.relative_to(src).parts[0] for f in files}) if labelled else []
    if max_images is not None:
        files = files[:max_images]
    labels = None
    if labelled:
        index = {name: i for i, name in enumerate(class_names)}
        labels = [index[f.relative_to(src).parts[0]] for f in files]
    modes = set()
    for path in files:
        try:
            with Image.open(path) as img:
                modes.add(img.mode)
                img.verify()
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
            raise CorruptDatasetError(f"{path}: cannot read image ({type(err).__name__}: {err}); fix or delete "
                                      "the file and run again") from err
    mode = "L" if modes <= GRAYSCALE_MODES else "RGB"
    return SourceImages(files, labels, class_names, mode)


def square_image(path: Path, resolution: int, transform: str, mode: str) -> Image.Image:
    """One source image as a ``resolution`` x ``resolution`` image of ``mode`` (L or RGB)."""
    with Image.open(path) as img:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # PIL wants palette transparency to go through RGBA
        if img.mode.startswith("I;16"):  # 16-bit gray: keep the high byte (PIL's convert would clip at 255)
            img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8), "L")
        img = img.convert(mode)
    width, height = img.size
    side = min(width, height) if transform == "center-crop" else max(width, height)
    if transform == "center-crop":
        left, top = (width - side) // 2, (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    elif (width, height) != (side, side):
        canvas = Image.new(mode, (side, side), 0)
        canvas.paste(img, ((side - width) // 2, (side - height) // 2))
        img = canvas
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="png", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def prepared_images(source: SourceImages, resolution: int, transform: str) -> Iterator[tuple[str, bytes, int | None]]:
    """``(member name, PNG bytes, label or None)`` for each source image, in order."""
    for i, path in enumerate(source.files):
        try:
            img = square_image(path, resolution, transform, source.mode)
        except Exception as err:  # verify() passed but decoding failed (e.g. truncated pixel data)
            raise CorruptDatasetError(f"{path}: cannot decode image ({type(err).__name__}: {err}); fix or delete "
                                      "the file and run again") from err
        yield member_name(i), png_bytes(img), (None if source.labels is None else source.labels[i])


def write_zip(source: SourceImages, dest: Path, resolution: int, transform: str) -> None:
    labels = []
    with atomic_write(dest) as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data, label in prepared_images(source, resolution, transform):
            archive.writestr(zipfile.ZipInfo(name, date_time=FIXED_DATE), data)
            labels.append([name, label])
        metadata = {"labels": labels if source.labels is not None else None,
                    "class_names": source.class_names or None}
        archive.writestr(zipfile.ZipInfo("dataset.json", date_time=FIXED_DATE), json.dumps(metadata))


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def write_shards(source: SourceImages, dest: Path, resolution: int, transform: str, shard_size: int) -> int:
    """WebDataset shards of ``shard_size`` samples (the last may be smaller): each sample is
    ``<key>.png`` plus ``<key>.cls`` (the label as decimal text) when labelled. Returns the shard count."""
    dest.mkdir(parents=True, exist_ok=True)
    # Replacing a shard set (--overwrite): its index goes first, so that a run interrupted while the
    # shards are rewritten leaves a folder that readers refuse as unfinished, not a mix of old and new.
    (dest / SHARD_INDEX).unlink(missing_ok=True)
    images = prepared_images(source, resolution, transform)
    shards: list[dict] = []
    for start in range(0, len(source.files), shard_size):
        count = min(shard_size, len(source.files) - start)
        name = shard_name(len(shards))
        with atomic_write(dest / name) as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(count):
                member, data, label = next(images)
                key = member[:-len(".png")].replace("/", "_")  # WebDataset keys hold no dots or slashes
                entries = [(f"{key}.png", data)] + ([] if label is None else [(f"{key}.cls", str(label).encode())])
                for entry_name, payload in entries:
                    info = tarfile.TarInfo(entry_name)
                    info.size, info.mode, info.mtime = len(payload), 0o644, 0
                    tar.addfile(info, io.BytesIO(payload))
        shards.append({"name": name, "samples": count})
    index = {"format": "gan-lightning image shards", "version": SHARD_FORMAT_VERSION, "resolution": resolution,
             "channels": 1 if source.mode == "L" else 3, "labelled": source.labels is not None,
             "class_names": source.class_names, "num_samples": len(source.files), "shards": shards}
    atomic_write_text(dest / SHARD_INDEX, json.dumps(index, indent=1))
    # Shards of an earlier preparation (--overwrite with fewer shards now) are not in the index: remove them.
    listed = {s["name"] for s in shards}
    for old in dest.glob("shard-*.tar"):
        if old.name not in listed:
            old.unlink()
    return len(shards)


def check_destination(dest: Path, fmt: str, overwrite: bool) -> None:
    if fmt == "zip":
        if dest.suffix.lower() != ".zip":
            raise OutputPathError(f"DEST {dest} must end in .zip for --format zip (or pass --format shards for a folder)")
        if dest.exists() and not overwrite:
            raise OutputPathError(f"DEST {dest} exists; pass --overwrite to replace it, or choose another name")
        check_output_path(dest, "DEST")
        return
    if dest.exists() and not dest.is_dir():
        raise OutputPathError(f"DEST {dest} is a file; --format shards writes a folder of shards")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise OutputPathError(f"DEST {dest} is a folder that is not empty; pass --overwrite to replace its shards, "
                              "or choose another folder")
    check_output_path(dest / SHARD_INDEX, "DEST")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m datamodules.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", metavar="SRC", type=Path, help="folder of images (class sub-folders become labels)")
    parser.add_argument("dest", metavar="DEST", type=Path, help="output .zip (or folder, with --format shards)")
    parser.add_argument("--resolution", type=int, required=True, help="side of the square output images")
    parser.add_argument("--transform", choices=TRANSFORMS, default="center-crop",
                        help="center-crop (default) or pad a non-square image to a square before resizing")
    parser.add_argument("--max-images", type=int, default=None, help="write only the first N images (sorted)")
    parser.add_argument("--format", choices=FORMATS, default="zip", dest="fmt",
                        help="zip (default, dataset=image_zip) or shards (WebDataset tars, dataset=image_stream)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (--format shards)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    return parser.parse_args(argv)


def prepare(src: Path, dest: Path, resolution: int, transform: str = "center-crop", max_images: int | None = None,
            fmt: str = "zip", shard_size: int = 1000, overwrite: bool = False) -> SourceImages:
    """Check everything, then write ``dest``; returns what was written."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {resolution!r}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {max_images}")
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if transform not in TRANSFORMS:
        raise ValueError(f"--transform {transform!r} is not one of {list(TRANSFORMS)}")
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not one of {list(FORMATS)}")
    if not is_power_of_two(resolution):
        # DCGAN here trains at any size, so this is allowed; ProGAN, StyleGAN and NVlabs' code need 2^k.
        warnings.warn(f"--resolution {resolution} is not a power of two: model=dcgan trains on it, but ProGAN, "
                      "StyleGAN(2) and NVlabs' training code need 2^k (e.g. 64, 128, 256)", stacklevel=2)
    check_destination(dest, fmt, overwrite)
    source = scan_source(src, max_images)
    if fmt == "zip":
        write_zip(source, dest, resolution, transform)
    else:
        write_shards(source, dest, resolution, transform, shard_size)
    return source


def main(argv: list[str] | None = None) -> None:
    from gan_modules.errors import report_user_errors

    args = parse_args(argv)
    with report_user_errors("prepare"):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *rest: print(f"prepare: warning: {message}", file=sys.stderr)
            source = prepare(args.src, args.dest, args.resolution, args.transform, args.max_images, args.fmt,
                             args.shard_size, args.overwrite)
    labels = f"{len(source.class_names)} classes ({', '.join(source.class_names[:5])}" + \
        (", ..." if len(source.class_names) > 5 else "") + ")" if source.labels is not None else "no labels"
    print(f"wrote {len(source.files)} images, {args.resolution}x{args.resolution} {source.mode}, {labels}, "
          f"to {args.dest}")


if __name__ == "__main__":
    main()
