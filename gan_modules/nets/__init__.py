"""Generators and discriminators: plain ``nn.Module``s that know nothing about training.

A generator has ``z_dim``, ``out_shape`` and ``output_range`` attributes and maps
``z: (B, z_dim)`` to samples ``(B, *out_shape)``. A discriminator maps samples to a
``common.DiscriminatorOutput``: one raw score (logit) per sample, shape ``(B,)``, plus class logits
and features where it has them. Conditional wrappers (``conditional.py``) carry ``num_classes``
and take labels too: ``G(z, y)``, ``D(x, y)``.
"""
