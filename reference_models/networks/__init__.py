"""The networks, one module each: the ``nn.Module``, its presets (``PRESETS``), its converter of official
weights (``from_official``) and what a checkpoint's keys and shapes say about its configuration.

They are reached by name through :mod:`reference_models.registry` (``create_model("mana", "paper")``); importing
a network module directly also works: ``from reference_models.networks.mana import MANA``.
"""
