"""bpclip_plugins: thin adapters of bpclip_core for torchmetrics, pyiqa and FiftyOne.

Each adapter maps its framework's conventions onto bpclip_core's engine; no scoring logic
lives here. Importing this package is cheap (no torch): it registers BPCLIP with pyiqa as
soon as pyiqa is imported, if it ever is (:mod:`bpclip_plugins.pyiqa_registration`).
"""

from .pyiqa_registration import register_when_available

register_when_available()
