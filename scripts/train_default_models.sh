#!/usr/bin/env bash
# Rebuild the bundled default models (src/bpclip_core/weights/bundled/bpclip-{nr,fr}.safetensors) from
# nothing: content from the package registries and Debian's photographs, calibrated pseudo-MOS
# labels, the frozen ImageNet EfficientNet-Lite2's levels cached once, the heads trained on them,
# held-out figures, fp16 export with the model card. Every step is cached or resumable in
# data/default-models/: after a kill, run the same command again.
#   bash scripts/train_default_models.sh --threads 2                # both models (NR, then FR), CPU: ~70 min
#   bash scripts/train_default_models.sh --mode nr --threads 2      # how the shipped NR model was made
#   bash scripts/train_default_models.sh --mode fr --threads 2      # how the shipped FR model was made
#   bash scripts/train_default_models.sh --device cuda --scale big --work data/big   # a bigger GPU run
# More options: bash scripts/train_default_models.sh --help (docs/default-models.md explains the recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
exec .venv/bin/python -m bpclip_core.training.default_models "$@"
