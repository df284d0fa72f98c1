"""bpclip_plugins: thin adapters of bpclip_core for torchmetrics, pyiqa and FiftyOne.

Each adapter maps its framework's conventions onto bpclip_core's engine; no scoring logic
lives here. Importing this package registers BPCLIP with pyiqa when pyiqa is installed.
"""

from .pyiqa import register_when_available

register_when_available()
