"""Model folders (gan_modules/hub.py): save, verified load, allowlist, atomic replacement, model card,
and huggingface_hub's from_pretrained / save_pretrained on local folders (no network)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import gan_modules.hub as hub
from gan_modules.atomic_files import OutputPathError
from gan_modules.checkpoints import UntrustedCheckpointError, load_generator
from gan_modules.hub import (HubGenerator, ModelFolderError, WeightsHashError, load, sample_images,
                             save_model_folder)
from gan_modules.nets.dcgan import DCGANGenerator
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train

GOLDEN = ROOT / "tests" / "golden" / "checkpoints"
TINY_STYLEGAN2 = ["model=stylegan2", "model.generator.z_dim=8", "model.generator.w_dim=8",
                  "model.generator.mapping_layers=2", "model.generator.channel_base=32",
                  "model.generator.max_channels=8", "model.discriminator.channel_base=32",
                  "model.discriminator.max_channels=8"]
CELL = 8 + 2  # 8x8 digits plus save_grid's 2-pixel padding
CALLS: list[object] = []


class UserGenerator(DCGANGenerator):
    """A user's own generator class, outside the project's packages."""


def record_call(*args, **kwargs):
    """A callable that a config.json could name: it must never run unless trusted."""
    CALLS.append((args, kwargs))
    return torch.nn.Identity()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The kept checkpoints (unconditional DCGAN with EMA, conditional DCGAN, VAE) and a tiny StyleGAN2
    trained for 5 generator steps, its run folder holding an evaluate.py result."""
    run_dir = tmp_path_factory.mktemp("stylegan2_run")
    train(compose_train([*FAST, *TINY_DIGITS, "debug=default", "callbacks.samples=null",
                         "callbacks.training_plots=null", *TINY_STYLEGAN2], run_dir))
    result = {"metrics": {"fid": 123.5, "kid": 0.25}, "floor": {"fid": 1.5, "kid": 0.001},
              "protocol": {"num_fake": 10000, "split": "test", "feature_net": "digits"}}
    (run_dir / "evaluation.json").write_text(json.dumps(result))
    # What Hydra records when train.py runs from the command line (train() called here does not).
    (run_dir / ".hydra").mkdir()
    choices = {"model": "stylegan2", "loss": "non_saturating", "optimizer": "adam_fast", "augment": "none",
               "experiment": None, "dataset": "digits"}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*TINY_DIGITS, *TINY_STYLEGAN2]))
    return {"dcgan_ema": GOLDEN / "wgan_gp.ckpt", "conditional": GOLDEN / "cgan_dcgan_acgan.ckpt",
            "vae": GOLDEN / "vae.ckpt", "stylegan2": run_dir / "checkpoints" / "last.ckpt"}


@pytest.fixture(scope="module")
def folders(checkpoints, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("folders")
    return {name: save_model_folder(path, out / name) for name, path in checkpoints.items()}


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def edit_config(folder: Path, change) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def rehash(folder: Path) -> None:
    """Record the weights file's current sha256, as if the folder had been exported that way."""
    import hashlib

    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    edit_config(folder, lambda c: c["weights"].update(sha256=digest))


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dcgan_ema", "conditional", "vae", "stylegan2"])
def test_loaded_folder_samples_exactly_like_the_checkpoint(name, checkpoints, folders):
    generator = load(folders[name])
    reference, _ = load_generator(checkpoints[name])
    assert not generator.training and not generator.network.training
    assert generator.z_dim == reference.z_dim
    assert generator.num_classes == getattr(reference, "num_classes", None)
    assert generator.data_range == ((0.0, 1.0) if name == "vae" else (-1.0, 1.0))
    assert generator.image_shape == (1, 8, 8)
    images = generator.sample(12, seed=5)
    assert images.shape == (12, 1, 8, 8)
    assert torch.equal(images, sample_images(reference, 12, seed=5))
    assert not torch.equal(images, generator.sample(12, seed=6))  # the seed matters
    if name != "stylegan2":  # no per-layer noise: a plain forward is deterministic
        z = torch.randn(4, generator.z_dim)
        labels = torch.tensor([0, 3, 7, 9]) if generator.num_classes else None
        expected = reference(z) if labels is None else reference(z, labels)
        assert torch.equal(generator(z, labels), expected)


def test_exported_weights_are_the_ema_generator(checkpoints, folders):
    state = load_file(folders["dcgan_ema"] / "model.safetensors")
    saved = torch.load(checkpoints["dcgan_ema"], weights_only=True)["state_dict"]
    for key, tensor in state.items():
        assert torch.equal(tensor, saved[f"generator_ema.{key}"])
    assert not all(torch.equal(t, saved[f"generator.{k}"]) for k, t in state.items())


def test_vae_folder_holds_only_the_decoder(folders):
    config = json.loads((folders["vae"] / "config.json").read_text())
    assert config["network"]["_target_"] == "gan_modules.nets.autoencoders.VAEDecoder"
    assert config["kind"] == "vae_decoder"
    assert not any(k.startswith("encoder") for k in load_file(folders["vae"] / "model.safetensors"))


def test_style_based_folder_keeps_w_avg_and_truncation(checkpoints, folders):
    generator = load(folders["stylegan2"])
    reference, _ = load_generator(checkpoints["stylegan2"])
    assert generator.style_based and generator.network.w_avg.abs().max() > 0
    truncated = generator.sample(6, seed=1, truncation_psi=0.5)
    assert torch.equal(truncated, sample_images(reference, 6, seed=1, truncation_psi=0.5))
    assert not torch.equal(truncated, generator.sample(6, seed=1))


def test_labels_and_truncation_are_checked(folders):
    with pytest.raises(ValueError, match="conditional"):
        load(folders["dcgan_ema"]).sample(2, labels=[1, 2])
    with pytest.raises(ValueError, match="style-based"):
        load(folders["dcgan_ema"]).sample(2, truncation_psi=0.7)
    conditional = load(folders["conditional"])
    with pytest.raises(ValueError, match="one label per image"):
        conditional.sample(3, labels=[1])
    with pytest.raises(ValueError):
        conditional.sample(2, labels=[1, 10])  # class 10 of 10
    with pytest.raises(ValueError, match="whole number"):
        conditional.sample(2.5)
    class_three = conditional.sample(4, seed=2, labels=[3] * 4)
    assert torch.equal(class_three, conditional(hub.chunked_latents(4, 8, 2, hub.LATENT_CHUNK), torch.full((4,), 3)))


def test_plain_autoencoder_is_refused_with_the_reason(tmp_path):
    state = torch.load(GOLDEN / "vae.ckpt", weights_only=True)
    state["run_config"]["model"]["network"] = {
        "_target_": "gan_modules.nets.autoencoders.StackedAutoencoder", "in_shape": [1, 8, 8], "hidden": [16]}
    plain = tmp_path / "stacked_ae.ckpt"
    torch.save(state, plain)
    with pytest.raises(ValueError, match="no prior to sample from"):
        save_model_folder(plain, tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["stacked_ae.ckpt"]


def test_loading_never_unpickles(folders, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    assert load(folders["conditional"]).sample(2).shape == (2, 1, 8, 8)


# --- refused folders ----------------------------------------------------------------------------
def test_one_flipped_byte_in_the_weights_is_refused(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "tampered")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's values: still a readable safetensors file
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsHashError, match="sha256") as info:
        load(folder)
    assert "export it anew" in str(info.value)


def test_valid_safetensors_with_other_values_is_refused(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "swapped")
    state = load_file(folder / "model.safetensors")
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, folder / "model.safetensors")
    with pytest.raises(WeightsHashError, match="does not match the sha256"):
        load(folder)
    with pytest.raises(WeightsHashError):
        HubGenerator.from_pretrained(str(folder))


@pytest.mark.parametrize("target", ["os.system", "gan_modules.nets.dcgan.torch.save",
                                    "gan_modules.training.Path.write_text", "builtins.eval",
                                    "gan_modules.nets.dcgan.DCGANGeneratorX", "tests.test_hub.record_call",
                                    "gan_modules.gan.GANModule", "datamodules.image_folder.ImageFolderDataModule"])
def test_config_naming_code_outside_the_allowlist_is_refused(target, folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "foreign")
    edit_config(folder, lambda c: c["network"].update(_target_=target))
    CALLS.clear()
    with pytest.raises(UntrustedCheckpointError, match="trust=True") as info:
        load(folder)
    assert target in str(info.value)
    with pytest.raises(UntrustedCheckpointError):
        HubGenerator.from_pretrained(str(folder))
    assert CALLS == []  # nothing the file names ran


def test_nested_and_interpolated_targets_are_refused(folders, tmp_path):
    nested = copy_folder(folders["conditional"], tmp_path / "nested")
    edit_config(nested, lambda c: c["network"]["backbone"].update(_target_="os.system"))
    with pytest.raises(UntrustedCheckpointError, match="os.system"):
        load(nested)
    interpolated = copy_folder(folders["dcgan_ema"], tmp_path / "interpolated")
    edit_config(interpolated, lambda c: c["network"].update(z_dim="${oc.env:HOME}"))
    with pytest.raises(UntrustedCheckpointError, match="interpolation"):
        load(interpolated)


def test_trust_lets_a_users_own_class_through(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "own")
    edit_config(folder, lambda c: c["network"].update(_target_=f"{__name__}.UserGenerator"))
    with pytest.raises(UntrustedCheckpointError, match="UserGenerator"):
        load(folder)
    generator = load(folder, trust=True)
    assert type(generator.network) is UserGenerator
    assert torch.equal(generator.sample(4, seed=1), load(folders["dcgan_ema"]).sample(4, seed=1))
    assert type(HubGenerator.from_pretrained(str(folder), trust=True).network) is UserGenerator


def test_config_json_cannot_grant_itself_trust(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "self_trusting")
    edit_config(folder, lambda c: c.update(trust=True, network={**c["network"], "_target_": "os.system"}))
    with pytest.raises(UntrustedCheckpointError):
        HubGenerator.from_pretrained(str(folder))


def test_missing_and_broken_folders_fail_clearly(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    no_weights = copy_folder(folders["dcgan_ema"], tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load(no_weights)
    no_config = copy_folder(folders["dcgan_ema"], tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(no_config)
    bad_json = copy_folder(folders["dcgan_ema"], tmp_path / "bad_json")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load(bad_json)
    with pytest.raises(ModelFolderError, match="is a file"):
        load(bad_json / "config.json")


def test_truncated_weights_fail_clearly_even_with_a_matching_hash(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    rehash(folder)
    with pytest.raises(ModelFolderError, match="cannot be read as a safetensors"):
        load(folder)


def test_weights_that_do_not_fit_the_config_fail_clearly(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "misfit")
    edit_config(folder, lambda c: c["network"].update(base_channels=16))
    with pytest.raises(ValueError, match="do not fit"):
        load(folder)


def test_nan_weights_are_refused(folders, tmp_path):
    folder = copy_folder(folders["dcgan_ema"], tmp_path / "nan")
    state = load_file(folder / "model.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, folder / "model.safetensors")
    rehash(folder)
    with pytest.raises(ValueError, match="NaN"):
        load(folder)


# --- writing the folder -------------------------------------------------------------------------
def test_existing_output_is_refused_then_replaced_with_overwrite(checkpoints, tmp_path):
    output = save_model_folder(checkpoints["dcgan_ema"], tmp_path / "model")
    with pytest.raises(OutputPathError, match="already exists"):
        save_model_folder(checkpoints["conditional"], output)
    assert load(output).num_classes is None
    save_model_folder(checkpoints["conditional"], output, overwrite=True)
    assert load(output).num_classes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


def test_failure_while_writing_leaves_the_old_folder_intact(checkpoints, tmp_path, monkeypatch):
    output = save_model_folder(checkpoints["dcgan_ema"], tmp_path / "model")
    before = {p.name: p.read_bytes() for p in output.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub, "save_grid", disk_full)  # after the weights and config.json are written
    with pytest.raises(OSError, match="No space"):
        save_model_folder(checkpoints["conditional"], output, overwrite=True)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_overwrite_without_an_atomic_exchange_parks_the_old_folder_until_the_new_one_is_in(
        checkpoints, tmp_path, monkeypatch):
    output = save_model_folder(checkpoints["dcgan_ema"], tmp_path / "model")
    monkeypatch.setattr(hub, "_exchange", lambda first, second: False)
    renames = []
    real_rename = hub.os.rename

    def failing_second_rename(source, target):
        renames.append((Path(source), Path(target)))
        if len(renames) == 2:  # the new folder into place: the old one has been parked
            raise OSError(5, "Input/output error")
        return real_rename(source, target)

    monkeypatch.setattr(hub.os, "rename", failing_second_rename)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    with pytest.raises(OSError, match="Input/output"):
        save_model_folder(checkpoints["conditional"], output, overwrite=True)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before  # put back
    monkeypatch.setattr(hub.os, "rename", real_rename)
    save_model_folder(checkpoints["conditional"], output, overwrite=True)
    assert load(output).num_classes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_overwrite_never_replaces_a_folder_that_is_not_a_model_folder(checkpoints, tmp_path):
    users = tmp_path / "photos"
    users.mkdir()
    (users / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="not a model folder"):
        save_model_folder(checkpoints["dcgan_ema"], users, overwrite=True)
    assert (users / "keep.jpg").read_bytes() == b"precious"


def test_unwritable_output_fails_before_the_checkpoint_is_read(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):  # not the missing checkpoint's error
        save_model_folder(tmp_path / "missing.ckpt", blocker / "model")
    with pytest.raises(OutputPathError, match="not a folder"):
        save_model_folder(tmp_path / "missing.ckpt", blocker, overwrite=True)


# --- the model card -----------------------------------------------------------------------------
def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_has_front_matter_and_the_sections(checkpoints, folders):
    card = (folders["conditional"] / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "gan-lightning"
    assert {"gan", "class-conditional", "safetensors"} <= set(meta["tags"])
    for heading in ("## Data", "## Recipe", "## Training length", "## Metrics", "## Samples", "## Use"):
        assert heading in card
    saved = torch.load(checkpoints["conditional"], weights_only=True)
    assert f"Global step (Lightning's optimizer steps, D steps included): {saved['global_step']}" in card
    assert f"Generator steps: {int(saved['state_dict']['generator_steps'])}" in card
    assert "Images shown: 1424" in card  # 89 batches of 16
    assert "DigitsDataModule" in card and "20%" in card and "Subset: none" in card
    assert "kind=non_saturating" in card and "AuxiliaryClassifierDiscriminator" in card
    assert "Not evaluated" in card and "python evaluate.py checkpoint=" in card
    assert 'load("path/to/this/folder")' in card and "from_pretrained" in card


def test_model_card_reports_the_run_folders_evaluation(folders):
    card = (folders["stylegan2"] / "README.md").read_text()
    assert "| fid | 123.5 | 1.5 |" in card and "Protocol: num_fake: 10000; split: test" in card
    assert "Not evaluated" not in card
    assert "truncation_psi=0.7" in card and "unconditional-image-generation" in front_matter(card)["tags"]
    assert "Config choices: model=stylegan2, loss=non_saturating, optimizer=adam_fast, augment=none, " \
        "experiment=none" in card
    assert f"`python train.py {' '.join([*TINY_DIGITS, *TINY_STYLEGAN2])}`" in card
    assert "# StyleGAN2Generator trained on digits" in card


@pytest.mark.parametrize("name,columns", [("dcgan_ema", 8), ("conditional", 10)])
def test_sample_grid_is_a_png_of_the_expected_size(name, columns, folders):
    with Image.open(folders[name] / "samples.png") as image:
        assert image.format == "PNG"
        assert image.size == (columns * CELL + 2, 8 * CELL + 2)


def test_sample_grid_of_a_conditional_model_has_one_class_per_column(folders):
    generator = load(folders["conditional"])
    z = hub.chunked_latents(80, generator.z_dim, hub.GRID_SEED, hub.LATENT_CHUNK)
    grid = np.asarray(Image.open(folders["conditional"] / "samples.png").convert("L"), dtype=np.float32) / 255
    for row, column in ((0, 0), (1, 3), (7, 9)):
        index = row * 10 + column
        expected = generator(z[index:index + 1], torch.tensor([column]))[0, 0].detach()  # class = column
        cell = grid[2 + row * CELL: row * CELL + CELL, 2 + column * CELL: column * CELL + CELL]
        assert np.abs(cell - ((expected.numpy() + 1) / 2).clip(0, 1)).max() <= 1.01 / 255


def test_grid_of_a_model_with_many_classes_shows_the_first_sixteen():
    from types import SimpleNamespace

    n, columns, labels = hub.grid_layout(SimpleNamespace(num_classes=1000, takes_labels=True))
    assert (n, columns) == (8 * 16, 16) and labels[:17] == [*range(16), 0]


# --- huggingface_hub ----------------------------------------------------------------------------
def test_from_pretrained_on_a_local_folder_matches_load(folders):
    for name in ("conditional", "stylegan2"):
        hub_loaded = HubGenerator.from_pretrained(str(folders[name]))
        assert isinstance(hub_loaded, HubGenerator)
        assert torch.equal(hub_loaded.sample(6, seed=4), load(folders[name]).sample(6, seed=4))


def test_save_pretrained_writes_a_folder_that_loads_the_same(folders, tmp_path):
    generator = load(folders["conditional"])
    generator.save_pretrained(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(hub.FOLDER_FILES)
    again = load(tmp_path / "again")
    assert torch.equal(again.sample(5, seed=8), generator.sample(5, seed=8))
    assert (tmp_path / "again" / "README.md").read_text() == (folders["conditional"] / "README.md").read_text()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (folders["conditional"] / "model.safetensors").read_bytes()
