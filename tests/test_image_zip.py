"""datamodules/prepare.py (folder -> NVlabs-style zip) and dataset=image_zip, on tiny generated images."""
from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.base import CorruptDatasetError, DatasetNotFoundError
from datamodules.image_zip import ImageZipDataModule
from datamodules.prepare import main as prepare_main
from datamodules.prepare import prepare
from gan_modules.checkpoints import resolve_allowed
from tests.conftest import FAST, ROOT


def write_image(path: Path, size=(20, 20), color=(255, 255, 255), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def class_folder(root: Path, counts=(("zebra", 3), ("ant", 2)), size=(24, 18)) -> Path:
    for name, count in counts:
        for i in range(count):
            write_image(root / name / f"{i}.png", size=(size[0] + i, size[1]), color=(10 * i, 80, 200))
    return root


def png(size=(16, 16), color=(0, 128, 255), mode="RGB", fmt="png") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(buffer, format=fmt)
    return buffer.getvalue()


def hand_zip(path: Path, members: dict[str, bytes], metadata=None) -> Path:
    """A zip as NVlabs' dataset_tool (or a user) writes it: members as given, optional dataset.json."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if metadata is not None:
            archive.writestr("dataset.json", json.dumps(metadata))
    return path


# --- prepare -------------------------------------------------------------------------------------
def test_prepare_writes_nvlabs_layout_with_labels_from_sorted_subfolders(tmp_path):
    src = class_folder(tmp_path / "src")
    dest = tmp_path / "out" / "data.zip"
    prepare(src, dest, 16)
    with zipfile.ZipFile(dest) as archive:
        names = archive.namelist()
        assert names == [f"00000/img0000000{i}.png" for i in range(5)] + ["dataset.json"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        metadata = json.loads(archive.read("dataset.json"))
        sizes = {Image.open(io.BytesIO(archive.read(n))).size for n in names[:-1]}
        modes = {Image.open(io.BytesIO(archive.read(n))).mode for n in names[:-1]}
    # sorted class names: ant (2 images) = 0, zebra (3 images) = 1, members in sorted path order
    assert metadata["labels"] == [[f"00000/img0000000{i}.png", label] for i, label in enumerate([0, 0, 1, 1, 1])]
    assert metadata["class_names"] == ["ant", "zebra"]
    assert sizes == {(16, 16)} and modes == {"RGB"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.zip"]  # no temporary file left
    first = dest.read_bytes()
    prepare(src, dest, 16, overwrite=True)
    assert dest.read_bytes() == first  # same images, byte-identical archive


@pytest.mark.filterwarnings("ignore:--resolution .* is not a power of two")
def test_center_crop_keeps_the_middle_and_pad_keeps_everything(tmp_path):
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 20:40] = 255  # a white middle third
    (tmp_path / "src").mkdir()
    Image.fromarray(wide).save(tmp_path / "src" / "wide.png")
    prepare(tmp_path / "src", tmp_path / "crop.zip", 20, transform="center-crop")
    prepare(tmp_path / "src", tmp_path / "pad.zip", 60, transform="pad")
    with zipfile.ZipFile(tmp_path / "crop.zip") as a, zipfile.ZipFile(tmp_path / "pad.zip") as b:
        crop = np.asarray(Image.open(io.BytesIO(a.read("00000/img00000000.png"))))
        pad = np.asarray(Image.open(io.BytesIO(b.read("00000/img00000000.png"))))
        assert json.loads(a.read("dataset.json"))["labels"] is None  # a flat folder has no labels
    assert crop.shape == (20, 20, 3) and crop.min() == 255  # only the white middle survives the crop
    assert pad.shape == (60, 60, 3)
    assert pad[:20].max() == 0 and pad[40:].max() == 0  # black bands above and below
    assert np.array_equal(pad[20:40], wide)  # the whole image, unscaled, in the middle


def test_grayscale_folders_stay_grayscale_and_mixed_ones_become_rgb(tmp_path):
    for i in range(2):
        write_image(tmp_path / "gray" / f"{i}.png", mode="L", color=100)
    prepare(tmp_path / "gray", tmp_path / "gray.zip", 8)
    write_image(tmp_path / "gray" / "colour.png", color=(255, 0, 0))
    prepare(tmp_path / "gray", tmp_path / "mixed.zip", 8, max_images=3)
    with zipfile.ZipFile(tmp_path / "gray.zip") as a, zipfile.ZipFile(tmp_path / "mixed.zip") as b:
        assert Image.open(io.BytesIO(a.read("00000/img00000000.png"))).mode == "L"
        mixed = [Image.open(io.BytesIO(b.read(n))) for n in b.namelist() if n.endswith(".png")]
    assert len(mixed) == 3 and {img.mode for img in mixed} == {"RGB"}
    assert np.asarray(mixed[1])[0, 0].tolist() == [100, 100, 100]  # gray replicated to three channels


def test_prepare_refuses_bad_input_before_writing(tmp_path, capsys):
    def run(*args):
        with pytest.raises(SystemExit) as info:
            prepare_main([str(a) for a in args])
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("prepare: error:") and "Traceback" not in err
        return err

    dest = tmp_path / "out.zip"
    assert "does not exist" in run(tmp_path / "nowhere", dest, "--resolution", "16")
    (tmp_path / "empty").mkdir()
    assert "no images" in run(tmp_path / "empty", dest, "--resolution", "16")
    src = class_folder(tmp_path / "src")
    (src / "ant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert "broken.png" in run(src, dest, "--resolution", "16")
    assert not dest.exists()  # the bad image stopped it before anything was written
    (src / "ant" / "broken.png").unlink()
    dest.write_bytes(b"keep me")
    assert "--overwrite" in run(src, dest, "--resolution", "16")
    assert dest.read_bytes() == b"keep me"
    assert ".zip" in run(src, tmp_path / "out.tar", "--resolution", "16")
    # Not a power of two: allowed (DCGAN trains on any size), with a warning naming the models that need 2^k.
    prepare_main([str(src), str(dest), "--resolution", "12", "--overwrite"])
    captured = capsys.readouterr()
    assert "not a power of two" in captured.err and "wrote 5 images, 12x12 RGB, 2 classes" in captured.out


# --- the datamodule ------------------------------------------------------------------------------
@pytest.fixture()
def prepared(tmp_path) -> Path:
    src = tmp_path / "src"
    for name, count in (("a", 6), ("b", 4)):
        for i in range(count):
            write_image(src / name / f"{i}.png", size=(20, 20), color=(25 * i, 0 if name == "a" else 255, 0))
    prepare(src, tmp_path / "data.zip", 8)
    return tmp_path / "data.zip"


def test_zip_datamodule_shapes_labels_splits_and_subset(prepared):
    dm = ImageZipDataModule(path=str(prepared), image_size=8, batch_size=4)
    assert dm.sample_shape == (3, 8, 8) and dm.num_classes == 2 and dm.class_names == ["a", "b"]
    dm.setup()
    assert dm.train_dataset.labels.tolist() == [0] * 6 + [1] * 4 and dm.val_dataset is dm.train_dataset
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1.0 and x.max() <= 1.0 and torch.all(x[:, 1] == -1.0)  # class a: green channel 0 -> lo
    gray = ImageZipDataModule(path=str(prepared), image_size=8, channels=1, value_range=(0.0, 1.0), labels="none")
    gray.setup()
    assert gray.num_classes is None and gray.train_dataset[0][0].shape == (1, 8, 8) and gray.train_dataset[0][1] == -1
    splits = []
    for seed in (0, 0, 1):
        held = ImageZipDataModule(path=str(prepared), image_size=8, test_fraction=0.3, seed=seed, batch_size=2)
        held.setup()
        assert len(held.train_dataset) == 7 and len(held.test_dataset) == 3 and held.val_dataset is held.test_dataset
        assert not set(held.train_dataset.members) & set(held.test_dataset.members)
        splits.append(held.test_dataset.members)
    assert splits[0] == splits[1] != splits[2]
    small = ImageZipDataModule(path=str(prepared), image_size=8, subset=4, batch_size=2)
    small.setup()
    assert len(small.train_dataset) == 4
    assert sorted(int(small.train_dataset[i][1]) for i in range(4)) == [0, 0, 1, 1]  # class-balanced


def test_each_worker_process_opens_its_own_handle(prepared):
    dm = ImageZipDataModule(path=str(prepared), image_size=8, batch_size=2, num_workers=2)
    dm.setup()
    dm.train_dataset[0]  # opens the archive in this process ...
    copy = pickle.loads(pickle.dumps(dm.train_dataset))  # ... which never travels with the dataset
    assert copy._archive is None
    labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 4


def test_a_zip_made_by_hand_in_nvlabs_layout(tmp_path):
    members = {f"00000/img0000000{i}.png": png(color=(i * 40, 0, 0)) for i in range(3)}
    members["00000/img00000003.jpg"] = png(fmt="jpeg")
    members["00000/"] = b""  # a folder entry, as zip tools write
    labels = [[name, i % 2] for i, name in enumerate(sorted(n for n in members if n != "00000/"))]
    path = hand_zip(tmp_path / "nv.zip", members, {"labels": labels})
    dm = ImageZipDataModule(path=str(path), image_size=16, batch_size=2)
    assert dm.num_classes == 2 and dm.class_names == ["0", "1"]
    dm.setup()
    assert len(dm.train_dataset) == 4 and dm.train_dataset.labels.tolist() == [0, 1, 0, 1]
    assert dm.train_dataset[3][0].shape == (3, 16, 16)
    unlabelled = hand_zip(tmp_path / "plain.zip", members, {"labels": None})
    assert ImageZipDataModule(path=str(unlabelled), image_size=16).num_classes is None
    assert ImageZipDataModule(path=str(hand_zip(tmp_path / "bare.zip", members)), image_size=16).num_classes is None


@pytest.mark.parametrize("case", ["sizes", "corrupt", "missing", "unlabelled", "vector"])
def test_bad_archives_name_the_member(tmp_path, case):
    members = {"img0.png": png(), "img1.png": png()}
    metadata = {"labels": [["img0.png", 0], ["img1.png", 1]]}
    expected = "img1.png"
    if case == "sizes":
        members["img1.png"] = png(size=(8, 8))
    elif case == "corrupt":
        members["img1.png"] = b"\x89PNG\r\n\x1a\n garbage"
    elif case == "missing":
        metadata["labels"].append(["gone/img9.png", 0])
        expected = "gone/img9.png"
    elif case == "unlabelled":
        metadata["labels"].pop()
    else:
        metadata["labels"][1][1] = [0.5, 0.5]
    path = hand_zip(tmp_path / "bad.zip", members, metadata)
    with pytest.raises(CorruptDatasetError, match=expected):
        ImageZipDataModule(path=str(path), image_size=16).setup()


def test_without_the_member_check_a_bad_member_stops_when_read(tmp_path):
    path = hand_zip(tmp_path / "bad.zip", {"img0.png": png(), "img1.png": png(size=(8, 8))})
    dm = ImageZipDataModule(path=str(path), image_size=16, check_members=False)
    dm.setup()
    assert dm.train_dataset[0][0].shape == (3, 16, 16)
    with pytest.raises(CorruptDatasetError, match="'img1.png' is 8x8"):
        dm.train_dataset[1]


def test_wrong_paths_sizes_and_files(tmp_path, prepared):
    with pytest.raises(ValueError, match=r"dataset\.path is not set"):
        ImageZipDataModule(path=None)
    with pytest.raises(DatasetNotFoundError, match="does not exist.*datamodules.prepare"):
        ImageZipDataModule(path=str(tmp_path / "typo.zip")).num_classes
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(CorruptDatasetError, match="text.zip is not a readable zip"):
        ImageZipDataModule(path=str(tmp_path / "text.zip")).setup()
    with pytest.raises(DatasetNotFoundError, match="holds no images"):
        ImageZipDataModule(path=str(hand_zip(tmp_path / "none.zip", {"a.txt": b"x"}))).setup()
    with pytest.raises(ValueError, match="holds 8x8 images.*dataset.image_size=8"):
        ImageZipDataModule(path=str(prepared), image_size=16).num_classes


def test_member_names_are_keys_never_paths(tmp_path):
    # Zip-slip names and json are data: nothing is written outside (or inside) the folder, nothing runs.
    inner = tmp_path / "inner"
    inner.mkdir()
    members = {"../escape.png": png(), "/abs.png": png(), "ok/../../up.png": png()}
    path = hand_zip(inner / "slip.zip", members, {"labels": [[n, 0] for n in members]})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    dm = ImageZipDataModule(path=str(path), image_size=16, batch_size=3)
    dm.setup()
    assert sorted(dm.train_dataset.members) == sorted(members)
    assert next(iter(dm.train_dataloader()))[0].shape == (3, 3, 16, 16)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_checkpoints_of_zip_runs_rebuild_their_dataset():
    assert resolve_allowed("datamodules.image_zip.ImageZipDataModule") is ImageZipDataModule


# --- the command line, end to end ---------------------------------------------------------------
def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_prepare_train_generate_evaluate_from_the_command_line(tmp_path):
    src = tmp_path / "src"
    for c, name in enumerate(("circles", "squares")):
        for i in range(20):
            write_image(src / name / f"{i:02d}.png", size=(18 + i % 3, 16), color=(12 * i, 100 * c, 50))
    result = run("-m", "datamodules.prepare", str(src), str(tmp_path / "data.zip"), "--resolution", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "run"
    result = run("train.py", *FAST, "debug=default", "dataset=image_zip", f"dataset.path={tmp_path / 'data.zip'}",
                 "dataset.image_size=16", "dataset.batch_size=8", "model=dcgan", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["run_config"]["dataset"]
    assert saved["_target_"] == "datamodules.image_zip.ImageZipDataModule" and saved["num_classes"] is None
    result = run("generate.py", f"checkpoint={ckpt}", "num_samples=3", f"output={tmp_path / 's.npz'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (3, 16, 16, 3)
    # evaluate.py rebuilds the run's dataset from the checkpoint (allowlisted) and, as for any dataset
    # without a shipped feature network, stops with its usual message rather than a traceback.
    result = run("evaluate.py", f"checkpoint={ckpt}", "num_samples=8", "num_real=8", "floor=false")
    assert result.returncode == 1 and "no shipped feature network for this dataset" in result.stderr
    assert "Traceback" not in result.stderr and "untrusted" not in result.stderr.lower()
