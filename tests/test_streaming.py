"""prepare --format shards and dataset=image_stream: per-rank shards, equal lengths, bad shards, a short run."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from datamodules.base import CorruptDatasetError, DatasetNotFoundError
from datamodules.prepare import prepare
from datamodules.streaming import ImageStreamDataModule, shard_plan
from gan_modules.checkpoints import resolve_allowed
from gan_modules.training import train
from tests.conftest import FAST, ROOT, compose_train


def numbered_folder(root: Path, n: int, classes: int = 2) -> Path:
    """n 8x8 images whose red value is their number (x 5), spread over ``classes`` sub-folders."""
    for i in range(n):
        path = root / f"class{i % classes}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (5 * i, 0, 255)).save(path)
    return root


def image_numbers(x: torch.Tensor) -> list[int]:
    """Undo numbered_folder's colouring: the images' numbers, from x in [0, 1]."""
    return [round(float(v) * 255 / 5) for v in x[:, 0, 0, 0]]


def stream_numbers(stream) -> list[int]:
    return [n for x, _ in stream for n in image_numbers(x.unsqueeze(0))]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    prepare(numbered_folder(root / "src", 40), root / "shards", 8, fmt="shards", shard_size=5)
    return root / "shards"


def datamodule(path: Path, **kwargs) -> ImageStreamDataModule:
    return ImageStreamDataModule(path=str(path), image_size=8, value_range=(0.0, 1.0), **kwargs)


def test_prepare_writes_shards_and_an_index(shards):
    index = json.loads((shards / "shards.json").read_text())
    assert [s["name"] for s in index["shards"]] == [f"shard-{i:06d}.tar" for i in range(8)]
    assert {s["samples"] for s in index["shards"]} == {5} and index["num_samples"] == 40
    assert index["labelled"] and index["class_names"] == ["class0", "class1"] and index["resolution"] == 8
    with tarfile.open(shards / "shard-000000.tar") as tar:
        assert tar.getnames()[:2] == ["00000_img00000000.png", "00000_img00000000.cls"]
    assert not list(shards.glob(".*.tmp"))


def test_overwriting_a_shard_set_leaves_only_the_new_one(tmp_path):
    src = numbered_folder(tmp_path / "src", 6)
    prepare(src, tmp_path / "shards", 8, fmt="shards", shard_size=2)
    with pytest.raises(ValueError, match="--overwrite"):
        prepare(src, tmp_path / "shards", 8, fmt="shards", shard_size=3)
    prepare(src, tmp_path / "shards", 8, fmt="shards", shard_size=3, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-000000.tar", "shard-000001.tar",
                                                                        "shards.json"]
    assert stream_numbers(datamodule(tmp_path / "shards").stream(shuffle=False)) == [0, 2, 4, 1, 3, 5]


def test_two_ranks_read_disjoint_shards_that_cover_the_data(shards):
    dm = datamodule(shards, batch_size=4, shuffle_buffer=8)
    assert dm.num_classes == 2
    dm.setup()
    seen = [stream_numbers(dm.stream(shuffle=True, rank=rank, world_size=2)) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 20
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(40))
    # Files are written in sorted order (class0/ first), 5 to a shard; rank 0 holds shards 0, 2, 4, 6.
    written = sorted(range(40), key=lambda i: (i % 2, i))
    assert sorted(seen[0]) == sorted(written[p] for p in range(40) if (p // 5) % 2 == 0)
    again = stream_numbers(dm.stream(shuffle=True, rank=0, world_size=2))
    assert sorted(again) == sorted(seen[0])
    stream = dm.stream(shuffle=True, rank=0, world_size=2)
    first, second = stream_numbers(stream), stream_numbers(stream)
    assert sorted(first) == sorted(second) and first != second  # a new order each epoch
    # The rank comes from the trainer in a real run.
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    batches = list(dm.train_dataloader())
    assert len(batches) == 5 and sorted(n for x, _ in batches for n in image_numbers(x)) == sorted(seen[1])
    assert all(y.tolist() == [n % 2 for n in image_numbers(x)] for x, y in batches)  # labels travel along


def test_uneven_shards_give_every_rank_the_same_length():
    # 11 samples in shards of 3: ranks hold 6 and 5; both serve 5, so DDP steps stay in lockstep.
    assert shard_plan([3, 3, 3, 2], rank=0, world_size=2, num_workers=0) == ([0, 2], 5)
    assert shard_plan([3, 3, 3, 2], rank=1, world_size=2, num_workers=0) == ([1, 3], 5)
    assert shard_plan([3, 3, 3, 2], rank=0, world_size=1, num_workers=2) == ([0, 1, 2, 3], 5)
    with pytest.raises(ValueError, match="4 shard.*3 rank.*x 2 loader worker.*--shard-size"):
        shard_plan([3, 3, 3, 2], rank=0, world_size=3, num_workers=2)


def test_loader_workers_split_a_ranks_shards(shards):
    dm = datamodule(shards, batch_size=5, num_workers=2)
    dm.setup()
    numbers = [n for x, _ in dm.train_dataloader() for n in image_numbers(x)]
    assert sorted(numbers) == list(range(40))


def test_missing_and_damaged_shard_sets(tmp_path, shards):
    with pytest.raises(ValueError, match=r"dataset\.path is not set"):
        ImageStreamDataModule(path="")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        datamodule(tmp_path / "typo").setup()
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(DatasetNotFoundError, match="shards.json is missing"):
        datamodule(tmp_path / "unfinished").setup()
    with pytest.raises(ValueError, match="holds 8x8 images.*dataset.image_size=8"):
        ImageStreamDataModule(path=str(shards), image_size=16).num_classes
    with pytest.raises(ValueError, match="dataset.subset"):
        datamodule(shards, subset=3).setup()
    index = json.loads((shards / "shards.json").read_text())
    for name in ("../shard-000000.tar", "pipe:touch marker"):  # never opened as a path or run as a command
        bad = tmp_path / f"bad{len(name)}"
        bad.mkdir()
        (bad / "shards.json").write_text(json.dumps({**index, "shards": [{"name": name, "samples": 5}]}))
        with pytest.raises(CorruptDatasetError, match="not a shard file name"):
            datamodule(bad).setup()
    assert not (ROOT / "marker").exists()


def write_tar(path: Path, entries: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("case", ["corrupt", "size", "pickle"])
def test_a_bad_sample_is_named(tmp_path, case):
    good = io.BytesIO()
    Image.new("RGB", (8 if case != "size" else 4, 8 if case != "size" else 4)).save(good, format="png")
    entries = {"ok.png": good.getvalue()} if case != "size" else {}
    if case == "corrupt":
        entries["bad.png"] = b"\x89PNG\r\n\x1a\n garbage"
    elif case == "size":
        entries["bad.png"] = good.getvalue()
    else:  # a sample that holds only a pickle: never unpickled, reported as having no image
        entries["bad.pyd"] = b"\x80\x04\x95cos\nsystem\n."
    write_tar(tmp_path / "shard-000000.tar", entries)
    (tmp_path / "shards.json").write_text(json.dumps({
        "resolution": 8, "channels": 3, "labelled": False, "class_names": [],
        "shards": [{"name": "shard-000000.tar", "samples": len(entries)}]}))
    dm = datamodule(tmp_path, batch_size=1)
    dm.setup()
    with pytest.raises(CorruptDatasetError, match=r"shard-000000.tar: sample 'bad'"):
        list(dm.stream(shuffle=False))


def test_train_a_few_steps_on_shards(shards, tmp_path):
    cfg = compose_train([*FAST, "debug=default", "dataset=image_stream", f"dataset.path={shards}",
                         "dataset.image_size=8", "dataset.batch_size=8", "model=dcgan"], tmp_path / "run")
    metrics = train(cfg)
    assert metrics["generator_steps"] == 5
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert resolve_allowed("datamodules.streaming.ImageStreamDataModule") is ImageStreamDataModule


class SampleNumbers(pl.Callback):
    """Test helper: each rank writes the numbers of the images it trained on to <dirpath>/rank<r>.json."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.numbers = Path(dirpath), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.numbers += image_numbers((batch[0] + 1) / 2)  # the run's data range is [-1, 1]

    def on_train_end(self, trainer, pl_module):
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.numbers))


@pytest.mark.slow
def test_two_gloo_processes_each_read_their_own_shards(shards, tmp_path):
    args = [sys.executable, "train.py", "trainer=ddp_cpu", *FAST, "debug=default", "dataset=image_stream",
            f"dataset.path={shards}", "dataset.image_size=8", "dataset.batch_size=4", "model=dcgan",
            "max_generator_steps=5", f"hydra.run.dir={tmp_path / 'run'}",
            "+callbacks.numbers._target_=tests.test_streaming.SampleNumbers", f"+callbacks.numbers.dirpath={tmp_path}"]
    result = subprocess.run(args, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 20 and not set(r0) & set(r1) and sorted(r0 + r1) == list(range(40))
