"""The standard FID Inception network, read from a local weights file, for paper-comparable scores.

FID, KID and IS in papers (TTUR's FID code, stylegan2-ada's metrics, StudioGAN, pytorch-fid,
torch-fidelity, torchmetrics) are all computed with one network: Inception v3 as TensorFlow shipped it
on 2015-12-05, ported to PyTorch by torch-fidelity. This module runs torch-fidelity's port of it with
the reference preprocessing:

* images in [0, 1] are quantised to uint8 first (``round(255 x)``), as a PNG on disk would hold them;
* grayscale is repeated to 3 channels;
* the network itself resizes to 299x299 with TensorFlow 1's bilinear filter (torch-fidelity's exact
  copy of it; torchmetrics' default antialiased resize gives other numbers).

The weights are never downloaded here (this project runs offline): give ``inception_weights=PATH`` or
put the file in torch hub's cache (``$TORCH_HOME/hub/checkpoints/``, usually
``~/.cache/torch/hub/checkpoints/``). The file is checked against its published SHA-256 and read with
``torch.load(weights_only=True)``; torch-fidelity's own loader (which unpickles with
``weights_only=False``, or downloads) is never used.
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# pytorch-fid publishes these weights under another name with the same sha256 prefix (torch hub's
# naming convention); either name in the cache is found, and either must match the full hash.
INCEPTION_FILE_ALIASES = (INCEPTION_FILE, "pt_inception-2015-12-05-6726825d.pth")
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
NUM_FEATURES = 2048  # pool3, the layer FID and KID use
NUM_LOGITS = 1008  # the 2015 graph's class count (1000 ImageNet classes and 8 unused)
INCEPTION_NOTE = ("Features come from the standard FID Inception network (torch-fidelity's port of the "
                  "2015-12-05 TensorFlow graph, sha256 {sha}), images quantised to uint8 and resized to 299 "
                  "with TensorFlow 1's bilinear filter: comparable with papers' numbers at the same sample "
                  "counts and split.")


class InceptionWeightsError(FileNotFoundError):
    """The Inception weights file is missing or is not the published one."""


def cache_candidates() -> list[Path]:
    """Where the weights are looked for without ``inception_weights=``: torch hub's checkpoint cache."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return [folder / name for name in INCEPTION_FILE_ALIASES]


def missing_weights_message(where: str, options: str = "") -> str:
    return (f"The FID Inception weights are not at {where}. Get {INCEPTION_FILE} (sha256 {INCEPTION_SHA256}), "
            f"published at {INCEPTION_URL} (pytorch-fid's pt_inception-2015-12-05-6726825d.pth, if it matches "
            f"the hash, also does), and pass {options}inception_weights=PATH or put it in "
            f"{cache_candidates()[0].parent}/. Without it, use the project's own feature network "
            f"({options}features=own, the default).")


def find_weights(path: str | Path | None = None, options: str = "") -> Path:
    """The weights file: ``path`` if given, else the first cache candidate that exists. ``options`` is
    the prefix of the options that set it (e.g. ``callbacks.quality.``), for the error message."""
    if path is not None:
        file = Path(path).expanduser()
        if file.is_dir():
            file = next((file / name for name in INCEPTION_FILE_ALIASES if (file / name).is_file()), file / INCEPTION_FILE)
        if not file.is_file():
            raise InceptionWeightsError(missing_weights_message(str(file), options))
        return file
    for file in cache_candidates():
        if file.is_file():
            return file
    raise InceptionWeightsError(missing_weights_message(" or ".join(str(c) for c in cache_candidates()), options))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: Path, expected_sha256: str | None = None) -> tuple[dict[str, Tensor], str]:
    """The state dict in ``path`` and its sha256, after checking the hash (before anything is read as
    a checkpoint; default: the published weights' ``INCEPTION_SHA256``) and reading it with
    ``weights_only=True``."""
    expected_sha256 = expected_sha256 or INCEPTION_SHA256
    digest = file_sha256(path)
    if digest != expected_sha256:
        raise InceptionWeightsError(
            f"{path} has sha256 {digest}, not the published FID Inception weights' {expected_sha256}: it is another "
            f"network, a truncated download or a modified file, and its scores would not be comparable. Download "
            f"{INCEPTION_URL} again.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the hash matched, so this is a torch that cannot read the file
        raise InceptionWeightsError(f"{path} cannot be read as a weights file ({type(err).__name__}: {err}).") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{path} does not hold a state dict of tensors.")
    return state, digest


@contextlib.contextmanager
def _weights_for_torch_fidelity(state: dict[str, Tensor] | None, owner: nn.Module) -> Iterator[None]:
    """Hand torch-fidelity's constructor a state dict instead of letting it download or unpickle one.

    Its ``FeatureExtractorInceptionV3.__init__`` builds the layers and then loads weights from a URL
    (``load_state_dict_from_url``) or a path (``torch.load(weights_only=False)``); both are replaced by
    the dict read here. ``None`` keeps the layers' random initialisation (for tests of the pipeline).
    """
    import torch_fidelity.feature_extractor_inceptionv3 as reference

    original = reference.load_state_dict_from_url
    reference.load_state_dict_from_url = lambda *args, **kwargs: owner.state_dict() if state is None else state
    try:
        yield
    finally:
        reference.load_state_dict_from_url = original


def _reference_class() -> type:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


class InceptionFeatures(nn.Module):
    """Images in [0, 1] (N, 1 or 3, H, W) -> pool3 features (N, 2048); ``head`` gives IS's logits.

    The same two calls as the project's own ``FeatureNet`` (``features``, ``head``), so the evaluation
    code serves both: ``head(features(x))`` are the 1008 "unbiased" logits (no bias term) that the
    Inception Score is defined on.
    """

    num_features = NUM_FEATURES
    num_classes = NUM_LOGITS
    embed_batch_size = 100  # 299x299 activations: 500 at once would take gigabytes

    def __init__(self, state_dict: dict[str, Tensor] | None, sha256: str | None = None) -> None:
        super().__init__()
        reference = _reference_class()
        self.network = reference.__new__(reference)
        with _weights_for_torch_fidelity(state_dict, self.network):
            reference.__init__(self.network, "inception-v3-compat", ["2048"])
        self.sha256 = sha256
        self.eval()

    def quantise(self, images: Tensor) -> Tensor:
        """[0, 1] floats -> uint8 with 3 channels, the form the reference network takes."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need images (N, 1 or 3, H, W), got shape {list(images.shape)}.")
        pixels = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
        return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        device = next(self.network.parameters()).device
        (pool,) = self.network(self.quantise(images).to(device))
        return pool

    def head(self, features: Tensor) -> Tensor:
        return features.to(self.network.fc.weight.dtype) @ self.network.fc.weight.T

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def load_inception(path: str | Path | None = None, expected_sha256: str | None = None,
                   options: str = "") -> tuple[InceptionFeatures, dict[str, Any]]:
    """The verified FID Inception network and a record of it (like ``load_feature_net``'s)."""
    file = find_weights(path, options)
    state, digest = read_weights(file, expected_sha256)
    try:
        net = InceptionFeatures(state, digest)
    except RuntimeError as err:  # a state dict of another architecture (only with a non-default hash)
        raise InceptionWeightsError(f"{file} does not fit the FID Inception architecture: {str(err)[:300]}") from err
    info = {"name": "inception", "weights": str(file), "sha256": digest,
            "note": INCEPTION_NOTE.format(sha=digest[:12])}
    return net, info


def save_random_inception(path: str | Path, seed: int = 0) -> str:
    """A randomly initialised network of the same architecture, saved as a weights file; returns its
    sha256. Only for testing the pipeline offline: its scores mean nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = InceptionFeatures(None)
    torch.save(net.network.state_dict(), path)
    return file_sha256(Path(path))
