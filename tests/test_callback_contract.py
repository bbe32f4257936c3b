"""The attributes the callbacks rely on exist on the modules, and the documented contract lists them all."""
import re

import pytest

import gan_modules.callbacks as callbacks
from gan_modules.build import build_module
from gan_modules.callbacks import (AUTOENCODER_MODULE_ATTRIBUTES, GAN_MODULE_ATTRIBUTES, VAE_MODULE_ATTRIBUTES,
                                   SamplingModule)
from tests.conftest import TINY_DIGITS, compose_train


def documented_attributes() -> dict[str, set[str]]:
    """Attribute name -> module kinds, from the rows of the contract table in the package docstring."""
    rows = re.findall(r"^``(\w+)``\s+((?:GAN|VAE|AE)(?:, (?:GAN|VAE|AE))*)\s", callbacks.__doc__, flags=re.MULTILINE)
    return {name: set(kinds.split(", ")) for name, kinds in rows}


def test_docstring_table_matches_the_attribute_tuples():
    documented = documented_attributes()
    assert {n for n, kinds in documented.items() if "GAN" in kinds} == set(GAN_MODULE_ATTRIBUTES)
    assert {n for n, kinds in documented.items() if "AE" in kinds} == set(AUTOENCODER_MODULE_ATTRIBUTES)
    assert {n for n, kinds in documented.items() if kinds & {"AE", "VAE"}} == set(VAE_MODULE_ATTRIBUTES)


@pytest.mark.parametrize("overrides", [[], ["model=cgan_mlp"], ["model.ema_decay=0.999"]],
                         ids=["gan", "conditional", "ema"])
def test_gan_module_has_the_contract_attributes(overrides):
    module = build_module(compose_train(TINY_DIGITS + overrides))
    missing = [name for name in GAN_MODULE_ATTRIBUTES if not hasattr(module, name)]
    assert not missing
    assert isinstance(module, SamplingModule)
    assert module.optimizer_steps_per_batch == module.n_critic + 1
    assert module.sampling_generator is (module.generator_ema if module.generator_ema is not None else module.generator)


@pytest.mark.parametrize("model", ["vae", "conv_ae"])
def test_autoencoder_module_has_the_contract_attributes(model):
    module = build_module(compose_train(TINY_DIGITS + [f"model={model}"]))
    variational = model == "vae"
    expected = VAE_MODULE_ATTRIBUTES if variational else AUTOENCODER_MODULE_ATTRIBUTES
    missing = [name for name in expected if not hasattr(module, name)]
    assert not missing
    assert module.optimizer_steps_per_batch == 1
    # Only a VAE can be sampled; a plain autoencoder's sampling callbacks find nothing to sample from.
    assert isinstance(module, SamplingModule) == variational
    assert (module.sampling_generator is not None) == variational


def test_protocol_rejects_a_module_without_the_sampling_attributes():
    import torch

    assert not isinstance(torch.nn.Linear(2, 2), SamplingModule)
