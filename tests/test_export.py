"""export.py and gan_modules/export.py: ONNX and TorchScript graphs of every generator family, checked
against PyTorch through onnxruntime / torch.jit.load, and the command line's refusals."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import gan_modules.export as export_module
from export import main as export_main
from gan_modules.callbacks.run_config import CONFIG_KEY
from gan_modules.checkpoints import load_generator
from gan_modules.export import (PARITY_TOLERANCE, ExportError, ParityError, check_growth, example_inputs,
                                export_generator, run_onnx, run_torchscript)
from gan_modules.nets.conditional import ConditionalGenerator, call_generator, is_conditional
from gan_modules.nets.mlp import MLPGenerator
from gan_modules.nets.progan import ProGANGenerator
from gan_modules.nets.stylegan import StyleGANGenerator
from gan_modules.nets.stylegan2 import StyleGAN2Generator
from gan_modules.style_sampling import fixed_noise
from tests.conftest import ROOT, TINY_DIGITS, compose_train

GOLDEN = ROOT / "tests" / "golden" / "checkpoints"
STYLE_SIZES = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, max_channels=8)


def with_noise_and_mean(generator):
    """Fresh style nets have zero noise strengths and w_avg = 0: give both values, so that the fixed
    noise and the truncation psi visibly matter."""
    torch.manual_seed(0)
    style_net = getattr(generator, "backbone", generator)
    with torch.no_grad():
        for name, parameter in style_net.named_parameters():
            if name.endswith("noise.weight"):
                parameter.normal_(0, 0.5)
        style_net.w_avg.normal_()
    return generator.eval()


def grown_progan() -> ProGANGenerator:
    # 16 maps, not 8: with 8 an unlucky init makes pixel norm amplify float32 rounding to ~1e-4 in
    # PyTorch itself (its own gap to float64), which no runtime could match more closely.
    net = ProGANGenerator([1, 16, 16], z_dim=8, channel_base=128, max_channels=16)
    net.set_progress(net.num_stages - 1, 1.0)  # what the growing callback leaves after the last stage
    return net.eval()


FAMILIES = {
    "mlp": lambda: MLPGenerator([1, 8, 8], z_dim=8, hidden=[16], batch_norm=True).eval(),
    "dcgan": lambda: load_generator(GOLDEN / "wgan_gp.ckpt")[0],           # its EMA generator
    "conditional": lambda: load_generator(GOLDEN / "cgan_dcgan_acgan.ckpt")[0],
    "progan": grown_progan,
    "stylegan": lambda: with_noise_and_mean(StyleGANGenerator([1, 8, 8], **STYLE_SIZES)),
    "stylegan2": lambda: with_noise_and_mean(StyleGAN2Generator([1, 8, 8], **STYLE_SIZES)),
    "cgan_stylegan2": lambda: with_noise_and_mean(ConditionalGenerator(StyleGAN2Generator([1, 8, 8], **STYLE_SIZES), 3)),
    "vae_decoder": lambda: load_generator(GOLDEN / "vae.ckpt")[0],
}


@torch.no_grad()
def reference(generator, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the generator itself makes for these inputs, computed through its own API (not the graph)."""
    labels = inputs.get("labels")
    if "truncation_psi" not in inputs:
        return call_generator(generator, inputs["z"], labels)
    net = getattr(generator, "backbone", generator)
    latent = inputs["z"] if labels is None else inputs["z"] * generator.label_embedding(labels)
    ws = net.broadcast(net.truncate(net.map(latent), float(inputs["truncation_psi"])))
    return net.synthesis(ws, noise=fixed_noise(net, len(latent), seed=0))


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_matches_the_generator_for_every_family(family, tmp_path):
    torch.manual_seed(0)
    generator = FAMILIES[family]()
    result = export_generator(generator, tmp_path / "g.onnx", "onnx")
    assert result.max_abs_diff < PARITY_TOLERANCE
    session = onnx_session(result.path)
    names = [i.name for i in session.get_inputs()]
    assert names == result.graph.input_names
    assert ("labels" in names) == is_conditional(generator)
    assert ("truncation_psi" in names) == family.startswith(("stylegan", "cgan_stylegan"))
    for batch in (1, 5):  # one file, two batch sizes
        inputs = example_inputs(result.graph, batch, psi=0.7 if "truncation_psi" in names else 1.0, seed=3)
        got = session.run(["images"], {k: v.numpy() for k, v in inputs.items()})[0]
        want = reference(generator, inputs).numpy()
        assert got.shape == want.shape == (batch, *generator.out_shape)
        assert np.abs(got - want).max() < PARITY_TOLERANCE
    metadata = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert metadata["z_dim"] == str(generator.z_dim) and metadata["inputs"] == ",".join(names)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind


@pytest.mark.parametrize("family", ["dcgan", "conditional", "stylegan2"])
def test_torchscript_matches_the_generator(family, tmp_path):
    torch.manual_seed(0)
    generator = FAMILIES[family]()
    result = export_generator(generator, tmp_path / "g.pt", "torchscript")
    assert result.max_abs_diff < PARITY_TOLERANCE
    for batch in (1, 5):
        inputs = example_inputs(result.graph, batch, psi=0.5, seed=4)
        got = run_torchscript(result.path, [inputs])[0]
        assert got.shape[0] == batch
        assert (got - reference(generator, inputs)).abs().max() < PARITY_TOLERANCE


def test_psi_and_labels_are_graph_inputs(tmp_path):
    """Changing psi or the labels in onnxruntime changes the images: neither was baked in at export."""
    generator = FAMILIES["cgan_stylegan2"]()
    path = export_generator(generator, tmp_path / "g.onnx", "onnx").path
    session = onnx_session(path)
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)

    def run(labels, psi):
        return session.run(["images"], {"z": z, "labels": np.array(labels, dtype=np.int64),
                                        "truncation_psi": np.array([psi], dtype=np.float32)})[0]

    base = run([0, 1, 2, 0], 1.0)
    assert np.abs(run([0, 1, 2, 0], 0.3) - base).max() > 1e-2
    other_labels = run([1, 2, 0, 1], 1.0)
    assert np.abs(other_labels - base).max() > 1e-2
    assert np.abs(run([0, 1, 2, 0], 1.0) - base).max() == 0  # and the graph itself is deterministic


def test_style_noise_none_leaves_the_noise_out(tmp_path):
    generator = FAMILIES["stylegan"]()
    result = export_generator(generator, tmp_path / "g.pt", "torchscript", style_noise="none")
    inputs = example_inputs(result.graph, 3, psi=1.0)
    want = generator.synthesis(generator.broadcast(generator.map(inputs["z"])), noise_mode="none")
    got = run_torchscript(result.path, [inputs])[0]
    assert (got - want).abs().max() < PARITY_TOLERANCE
    assert (got - reference(generator, inputs)).abs().max() > 1e-3  # the fixed-noise images differ


def test_a_partly_grown_generator_is_refused_unless_allowed(tmp_path):
    torch.manual_seed(0)
    net = ProGANGenerator([1, 16, 16], z_dim=8, channel_base=128, max_channels=16).eval()
    net.set_progress(1, 0.5)
    with pytest.raises(ExportError, match=r"stage 1 of 0\.\.2 \(8x8 of 16x16, fading in with alpha 0\.500\).*allow_partial=true"):
        check_growth(net, allow_partial=False)
    assert "8x8 images" in check_growth(net, allow_partial=True)
    result = export_generator(net, tmp_path / "g.onnx", "onnx")  # the current stage, fade included
    inputs = example_inputs(result.graph, 2)
    got = run_onnx(result.path, [inputs])[0]
    assert got.shape == (2, 1, 8, 8)
    assert (got - net(inputs["z"])).abs().max() < PARITY_TOLERANCE
    assert check_growth(grown_progan(), allow_partial=False) is None


def test_a_disagreeing_file_is_deleted_and_the_difference_reported(tmp_path, monkeypatch):
    exporter = export_module.EXPORTERS["onnx"]
    monkeypatch.setattr(exporter, "run", lambda path, inputs: [o + 1e-3 for o in run_onnx(path, inputs)])
    (tmp_path / "g.onnx").write_bytes(b"the user's old file")
    with pytest.raises(ParityError, match=r"max abs diff 0\.001 > 0\.0001") as caught:
        export_generator(FAMILIES["mlp"](), tmp_path / "g.onnx", "onnx", overwrite=True)
    assert caught.value.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert (tmp_path / "g.onnx").read_bytes() == b"the user's old file"
    assert not list(tmp_path.glob(".*.tmp"))


# --- the command line ---------------------------------------------------------------------------
def fake_checkpoint(path: Path, overrides: list[str], prepare=lambda net: None, key: str = "generator") -> Path:
    """A checkpoint in train.py's layout (weights, resolved model and dataset config) without training."""
    cfg = compose_train([*TINY_DIGITS, *overrides])
    node = cfg.model.generator if key == "generator" else cfg.model.network
    net = instantiate(node)
    prepare(net)
    config = {"model": OmegaConf.to_container(cfg.model, resolve=True),
              "dataset": OmegaConf.to_container(cfg.dataset, resolve=True)}
    torch.save({"state_dict": {f"{key}.{k}": v for k, v in net.state_dict().items()}, CONFIG_KEY: config}, path)
    return path


def fails(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        export_main(list(argv))
    message = str(exit_info.value.code)
    assert exit_info.value.code not in (0, None) and message.startswith("export.py: ") and "\n" not in message
    return message


def test_cli_exports_a_checkpoint_and_refuses_to_overwrite(tmp_path, capsys):
    output = tmp_path / "out" / "g.onnx"
    args = [f"checkpoint={GOLDEN / 'cgan_dcgan_acgan.ckpt'}", "format=onnx", f"output={output}"]
    assert export_main(args) == output
    printed = capsys.readouterr().out
    assert "labels (B,) int64 in [0, 9]" in printed and "max abs diff" in printed
    before = output.read_bytes()
    assert "exists; pass overwrite=true" in fails(capsys, *args)
    assert export_main([*args, "overwrite=true"]) == output and output.read_bytes() == before  # deterministic


def test_cli_refuses_bad_input_before_loading(tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"
    good = f"checkpoint={GOLDEN / 'vae.ckpt'}"
    assert "choose one of onnx, torchscript, hub" in fails(capsys, good, "format=tflite", f"output={tmp_path / 'g.onnx'}")
    assert "missing.ckpt does not exist" in fails(capsys, f"checkpoint={missing}", f"output={tmp_path / 'g.onnx'}")
    (tmp_path / "a_file").write_text("")
    # the output is checked first: the missing checkpoint is never reached
    assert "a_file is a file, not a folder" in fails(capsys, f"checkpoint={missing}",
                                                      f"output={tmp_path / 'a_file' / 'g.onnx'}")
    assert "writes a .pt file" in fails(capsys, good, "format=torchscript", f"output={tmp_path / 'g.onnx'}")
    assert "unknown option" in fails(capsys, good, f"output={tmp_path / 'g.onnx'}", "opset=11")
    assert "give the output" in fails(capsys, good)
    assert "style_noise must be one of fixed, none" in fails(capsys, good, f"output={tmp_path / 'g.onnx'}",
                                                             "style_noise=random")
    assert not list(tmp_path.glob("*.onnx"))


def test_cli_partial_progan_and_plain_autoencoder(tmp_path, capsys):
    tiny = ["model=progan", "model.generator.z_dim=8", "model.generator.channel_base=32", "model.generator.max_channels=8"]
    partial = fake_checkpoint(tmp_path / "partial.ckpt", tiny, lambda net: net.set_progress(0, 1.0))
    output = tmp_path / "g.pt"
    message = fails(capsys, f"checkpoint={partial}", "format=torchscript", f"output={output}")
    assert "not fully grown" in message and "stage 0 of 0..1 (4x4 of 8x8)" in message and "allow_partial=true" in message
    assert not output.exists()
    export_main([f"checkpoint={partial}", "format=torchscript", f"output={output}", "allow_partial=true"])
    assert "it makes 4x4 images" in capsys.readouterr().out
    assert run_torchscript(output, [{"z": torch.zeros(2, 8)}])[0].shape == (2, 1, 4, 4)
    folder = tmp_path / "model"
    message = fails(capsys, f"checkpoint={partial}", "format=hub", f"output={folder}")
    assert "not fully grown" in message and "allow_partial=true" in message and not folder.exists()

    plain = fake_checkpoint(tmp_path / "ae.ckpt", ["model=stacked_ae"], key="network")
    assert "autoencoder with no prior" in fails(capsys, f"checkpoint={plain}", f"output={tmp_path / 'ae.onnx'}")


def test_cli_refuses_a_checkpoint_that_would_build_foreign_code(tmp_path):
    """Run as a user would: one line on stderr, exit status 1, nothing built, nothing written."""
    state = torch.load(GOLDEN / "vae.ckpt", weights_only=True)
    marker, output = tmp_path / "marker", tmp_path / "g.onnx"
    state[CONFIG_KEY]["model"]["network"] = {"_target_": "pathlib.Path.write_text", "_args_": [str(marker), "pwned"]}
    torch.save(state, tmp_path / "evil.ckpt")
    result = subprocess.run([sys.executable, "export.py", f"checkpoint={tmp_path / 'evil.ckpt'}", f"output={output}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pathlib.Path.write_text" in result.stderr and "trust_checkpoint=true" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not output.exists()


def test_format_hub_dispatches_to_the_model_folder_writer(tmp_path, monkeypatch):
    import gan_modules.hub

    calls = []
    monkeypatch.setattr(gan_modules.hub, "save_model_folder",
                        lambda checkpoint, output, trust=False, overwrite=False: calls.append(
                            (checkpoint, output, trust, overwrite)) or output)
    checkpoint = GOLDEN / "vae.ckpt"
    export_main([f"checkpoint={checkpoint}", "format=hub", f"output={tmp_path / 'model'}", "overwrite=true"])
    assert calls == [(checkpoint, tmp_path / "model", False, True)]
