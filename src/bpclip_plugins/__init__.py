"""bpclip_plugins: thin adapters of bpclip_core for torchmetrics, pyiqa and FiftyOne.

Each adapter only maps its framework's conventions onto bpclip_core; no scoring logic lives
here. (The adapters land with their own issues; this package holds none yet.)
"""
