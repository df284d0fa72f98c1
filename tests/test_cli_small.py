"""The small ones of issue 29.4: ``--version``, a readable ``info``, and a hint for channels-last tensors.

(uint8 tensors, the ``mode`` check and pyiqa's ``bpclip_nr`` are tested with the adapters:
tests/plugins/test_torchmetrics.py, test_pyiqa.py and tests/hostile/test_hostile_tensors.py.)
"""

from __future__ import annotations

import json

import pytest
import torch

from bpclip_core import InputError, __version__
from bpclip_core.cli import main
from bpclip_core.inputs.checks import check_image_shape
from bpclip_core.weights.checkpoint import read_metadata, resolve_checkpoint


def test_version_prints_the_version_and_exits_0(capsys):
    assert main(["--version"]) == 0  # before: a usage error (exit 2)
    assert capsys.readouterr().out.strip() == f"bpclip {__version__}"


def test_info_is_a_short_summary_with_the_record_on_request(capsys):
    bundled = resolve_checkpoint(None)
    meta = read_metadata(bundled)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("  ")]  # the checkpoint's lines, no paths
    assert len(summary) >= 6 and max(map(len, summary)) <= 110  # before: one 5 kB line of provenance JSON
    assert len(out) < 2000
    for wanted in ("model bpclip-nr (bundled default model)", "mode NR", "backbone efficientnet_lite2",
                   "training: Trained by the bpclip project on SYNTHETIC", str(bundled), " MB, tensor digest ",
                   meta["tensor_digest"], "--provenance", "--json"):  # fmt: skip
        assert wanted in out, wanted
    assert "kept_epoch" not in out  # the training record only on request

    assert main(["info", "--provenance"]) == 0
    with_record = capsys.readouterr().out
    assert with_record.startswith(out.rsplit("\n  (--provenance", 1)[0]) and '"kept_epoch"' in with_record

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    checkpoint = info["checkpoint"]
    assert info["bpclip"] == __version__ and checkpoint["path"] == str(bundled)
    assert checkpoint["file_size"] == bundled.stat().st_size
    assert checkpoint["provenance"] == meta["provenance"] and checkpoint["tensor_digest"] == meta["tensor_digest"]
    assert len(checkpoint["adjectives"]) == 40


def test_info_of_an_untrained_checkpoint_says_so(tmp_path, capsys):
    out = tmp_path / "tiny-fr.safetensors"
    assert main(["init-checkpoint", "--config", "tiny", "--mode", "fr", "--random", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model tiny-fr" in text and "mode FR" in text and "training: no: UNTRAINED (random)" in text


def test_info_json_of_a_missing_checkpoint_is_a_usage_error(capsys):
    assert main(["info", "--json", "--checkpoint", "no-such-model"]) == 2
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"] is None and "no-such-model" in info["checkpoint_error"]


@pytest.mark.parametrize(
    ("shape", "hint"),
    [
        ((2, 64, 64, 3), r"looks channels-last \(N, H, W, C\): use images\.permute\(0, 3, 1, 2\)$"),
        ((64, 64, 3), r"looks channels-last \(H, W, C\): use images\.permute\(2, 0, 1\)$"),
        ((2, 64, 64, 4), r"permute\(0, 3, 1, 2\), and convert grayscale or RGBA images to RGB$"),
        ((2, 64, 64, 1), r"permute\(0, 3, 1, 2\), and convert grayscale or RGBA images to RGB$"),
        ((2, 1, 64, 64), r"got 1 \(shape \(2, 1, 64, 64\)\); convert grayscale or RGBA images to RGB first$"),
    ],
)
def test_a_channels_last_tensor_gets_the_permute_to_use(shape, hint):
    with pytest.raises(InputError, match=r"3 \(RGB\) channels in dim 1.*" + hint):
        check_image_shape(torch.rand(shape))
