"""generate.py and evaluate.py on bad input: one clear message before any work, never a traceback,
never a lost or misnamed file, and only strict JSON."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import generate
from gan_modules.training import train
from tests.conftest import FAST, TINY_DIGITS, compose_train

MISSING = "/nonexistent/never.ckpt"  # checks that must come before loading pass this and still fail on their own


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gan")
    train(compose_train([*FAST, *TINY_DIGITS, "model=mlp_small", "max_generator_steps=2", "callbacks.samples=null"], out))
    return out / "checkpoints" / "last.ckpt"


def refused(main, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert "Traceback" not in message
    return message


# --- generate.py: options -----------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["labels=[1.7]"], "labels takes whole numbers"),
    (["labels=[cat]"], "labels takes whole numbers"),
    (["arithmetic=[1,2,x]"], "arithmetic takes whole numbers"),
    (["interpolate=[1,2.5]"], "interpolate takes whole numbers"),
    (["num_samples=abc"], "num_samples must be a whole number"),
    (["num_samples=2.5"], "num_samples must be a whole number"),
    (["num_samples=0"], "num_samples must be >= 1"),
    (["batch_size=-1"], "batch_size must be >= 1"),
    (["grid_size=0"], "grid_size must be >= 1"),
    (["seed=0.5"], "seed must be a whole number"),
    (["steps=1", "interpolate=[1,2]"], "steps must be >= 2"),
    (["style_mixing=m.png", "style_mixing_crossover=1.5"], "style_mixing_crossover must be a whole number"),
    (["truncation_psis=[0.5,nan]", "truncation_sweep=t.png"], "truncation_psis takes finite numbers"),
    (["num_samples"], "options are key=value"),
    (["device=cuda:banana"], "device=cuda:banana is not a device"),
    (["device=meta"], "device=meta is not supported"),
])
def test_generate_refuses_bad_values_before_loading(args, expected):
    assert expected in refused(generate.main, [f"checkpoint={MISSING}", *args])


def test_generate_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in refused(generate.main, [f"checkpoint={MISSING}", "device=cuda"])


@pytest.mark.parametrize("key, name, expected", [
    ("output", "samples.png", "must name a .npz file"),
    ("output", "dir/", "is a folder"),
    ("grid", "grid.jpg", "must name a .png file"),
    ("class_grid", "classes.npz", "must name a .png file"),
])
def test_generate_refuses_output_names_it_would_not_write_as_given(tmp_path, key, name, expected):
    message = refused(generate.main, [f"checkpoint={MISSING}", f"{key}={tmp_path}/{name}"])
    assert expected in message and key in message
    assert list(tmp_path.iterdir()) == []  # nothing written, not even samples.png.npz or dir.npz


def test_generate_refuses_an_output_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    message = refused(generate.main, [f"checkpoint={MISSING}", f"output={tmp_path / 'file' / 's.npz'}"])
    assert "is a file, not a folder" in message


def test_generate_reports_a_bad_checkpoint_in_one_line(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    message = refused(generate.main, [f"checkpoint={text}", f"output={tmp_path / 's.npz'}"])
    assert message.startswith("generate.py: ") and "notes.ckpt" in message


def test_generate_writes_exactly_the_named_files(checkpoint, tmp_path, capsys):
    out = generate.main([f"checkpoint={checkpoint}", "num_samples=12", f"output={tmp_path / 'a' / 's.npz'}",
                         f"grid={tmp_path / 'g.png'}"])
    assert out == tmp_path / "a" / "s.npz"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["g.png", "s.npz"]  # no temp files left
    with np.load(out) as npz:
        assert npz["arr_0"].shape == (12, 8, 8, 1) and npz["arr_0"].dtype == np.uint8
    assert f"to {out}" in capsys.readouterr().out


def fill_disk(handle, *args, **kwargs):
    handle.write(b"half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_samples(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "samples.npz"
    out.write_bytes(b"the earlier samples")
    monkeypatch.setattr(generate.np, "savez", fill_disk)
    message = refused(generate.main, [f"checkpoint={checkpoint}", "num_samples=4", f"output={out}"])
    assert "full" in message and "intact" in message
    assert out.read_bytes() == b"the earlier samples"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.npz"]


def test_a_full_disk_keeps_the_previous_grid(checkpoint, tmp_path, monkeypatch):
    import gan_modules.images as images

    grid = tmp_path / "grid.png"
    grid.write_bytes(b"the earlier grid")
    monkeypatch.setattr(images, "save_image", lambda x, fp, **kw: fill_disk(fp))
    message = refused(generate.main, [f"checkpoint={checkpoint}", "num_samples=4", f"output={tmp_path / 's.npz'}",
                                      f"grid={grid}"])
    assert "full" in message
    assert grid.read_bytes() == b"the earlier grid"


def test_too_many_samples_for_memory_are_refused_before_sampling(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "available_memory_bytes", lambda: 10_000)
    message = refused(generate.main, [f"checkpoint={checkpoint}", "num_samples=1000", f"output={tmp_path / 's.npz'}"])
    assert "1000 samples of shape [1, 8, 8]" in message and "seed" in message
    assert not (tmp_path / "s.npz").exists()
    monkeypatch.setattr(generate, "available_memory_bytes", lambda: 10**6)  # 1000 x 64 x 5 bytes fit
    assert generate.main([f"checkpoint={checkpoint}", "num_samples=1000", f"output={tmp_path / 's.npz'}"]).is_file()


def test_non_finite_samples_are_never_written(checkpoint, tmp_path, monkeypatch):
    def broken(generator, z, *args, **kwargs):
        out = torch.zeros(len(z), 1, 8, 8)
        out[-1, 0, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(generate, "sample_in_batches", broken)
    message = refused(generate.main, [f"checkpoint={checkpoint}", "num_samples=5", f"output={tmp_path / 's.npz'}"])
    assert "NaN" in message and str(checkpoint) in message and "1 of 5" in message
    assert not (tmp_path / "s.npz").exists()


# --- evaluate.py ------------------------------------------------------------------------------
class Marker:
    """Unpickling this would create the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def bad_samples(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.npz"
    images = np.zeros((10, 8, 8, 1), np.uint8)
    if kind == "no_arr_0":
        np.savez(path, samples=images)
    elif kind == "text":
        path.write_text("these are not samples\n")
    elif kind == "npy":
        path = tmp_path / "samples.npy"
        np.save(path, images)
    elif kind == "one":
        np.savez(path, images[:1])
    elif kind == "empty":
        np.savez(path, images[:0])
    elif kind == "nchw":
        np.savez(path, images.transpose(0, 3, 1, 2))
    elif kind == "float_images":
        np.savez(path, images.astype(np.float32))
    elif kind == "wrong_size":
        np.savez(path, np.zeros((10, 16, 16, 1), np.uint8))
    elif kind == "truncated":
        np.savez(path, images)
        path.write_bytes(path.read_bytes()[:100])
    return path


@pytest.mark.parametrize("kind, expected", [
    ("no_arr_0", "has no arr_0 (its arrays: ['samples'])"),
    ("text", "is not an npz archive"),
    ("npy", "is a .npy file"),
    ("one", "holds 1 sample(s); the metrics need at least 2"),
    ("empty", "holds 0 sample(s)"),
    ("nchw", "arr.transpose(0, 2, 3, 1)"),
    ("float_images", "must be uint8"),
    ("wrong_size", "samples have shape [1, 16, 16]"),
    ("truncated", "is not an npz archive"),
])
def test_evaluate_explains_bad_sample_files(tmp_path, kind, expected):
    message = refused(evaluate.main, [f"samples={bad_samples(tmp_path, kind)}", "dataset=digits", "floor=false"])
    assert message.startswith("evaluate.py: ") and expected in message


def test_evaluate_never_unpickles_an_object_array(tmp_path):
    marker = tmp_path / "MARKER"
    objects = np.empty(2, dtype=object)
    objects[:] = [Marker(str(marker)), 1]
    np.savez(tmp_path / "evil.npz", objects, allow_pickle=True)
    message = refused(evaluate.main, [f"samples={tmp_path / 'evil.npz'}", "dataset=digits"])
    assert "object array" in message and "never read" in message
    assert not marker.exists()


@pytest.mark.parametrize("args, expected", [
    (["num_samples=0"], "num_samples must be >= 1"),
    (["num_samples=-5"], "num_samples must be >= 1"),
    (["num_real=1.5"], "num_real must be a whole number"),
    (["crop=abc"], "crop must be a whole number"),
    (["seed=x"], "seed must be a whole number"),
    (["floor"], "options are key=value"),
])
def test_evaluate_refuses_bad_values(tmp_path, args, expected):
    assert expected in refused(evaluate.main, ["samples=x.npz", "dataset=digits", *args])


def test_evaluate_checks_the_json_path_before_scoring(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "evaluate", lambda cfg: pytest.fail("scored before the json path was checked"))
    assert "is a folder" in refused(evaluate.main, ["samples=x.npz", "dataset=digits", f"json={tmp_path}/"])


def test_evaluate_reports_a_bad_checkpoint_in_one_line(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    message = refused(evaluate.main, [f"checkpoint={text}"])
    assert message.startswith("evaluate.py: ") and "notes.ckpt" in message


def test_evaluate_json_is_strict_even_for_infinite_and_nan_scores(tmp_path, monkeypatch, capsys):
    result = {"metrics": {"fid": float("inf"), "kid": float("nan"), "precision": np.float64(-np.inf),
                          "recall": 0.5}, "protocol": {"num_fake": 10, "values": [1.0, float("nan")]}}
    monkeypatch.setattr(evaluate, "evaluate", lambda cfg: result)
    out = tmp_path / "result.json"
    evaluate.main(["samples=x.npz", "dataset=digits", f"json={out}"])

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=no_constants)
    written = json.loads(out.read_text(), parse_constant=no_constants)
    assert printed == written
    assert printed["metrics"] == {"fid": None, "kid": None, "precision": None, "recall": 0.5}
    assert printed["protocol"]["values"] == [1.0, None]
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o644)
