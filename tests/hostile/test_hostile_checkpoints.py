"""Hostile checkpoints: refused with the file named, before any tensor is allocated from the header."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch

from bpclip_core import CheckpointError
from bpclip_core.weights.checkpoint import load_checkpoint

from .corpus import hostile_checkpoint, tiny_tensor_checkpoint


def refuse_tensor_loading(monkeypatch) -> None:
    """From now on, fail if the loader reads tensors (it must refuse from the header alone)."""

    def refuse(*_, **__):
        raise AssertionError("tensors were loaded before the header was checked")

    monkeypatch.setattr("safetensors.torch.load_file", refuse)


def test_huge_declared_layers_are_refused_without_allocating(tiny_checkpoints, tmp_path, monkeypatch):
    huge = tiny_tensor_checkpoint(
        tiny_checkpoints["nr"], tmp_path / "huge.safetensors", token_dim=8192, fusion_hidden_dim=16384, clip_dim=8192
    )
    absurd = tiny_tensor_checkpoint(tiny_checkpoints["nr"], tmp_path / "absurd.safetensors", token_dim=10**9)
    assert huge.stat().st_size < 100_000
    refuse_tensor_loading(monkeypatch)
    with pytest.raises(CheckpointError, match="huge.safetensors: tensors do not match the stored config"):
        load_checkpoint(huge)
    with pytest.raises(CheckpointError, match=r"absurd.safetensors: .*token_dim must be an integer in \[1, 8192\]"):
        load_checkpoint(absurd)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": "a string config"}, "'config' must be a JSON object"),
        ({"config": {"image_size": 8}}, r"image_size must be an integer in \[32, "),
        ({"config": {"token_dim": "256"}}, "token_dim must be an integer"),
        ({"config": {"similarity_temperature": float("nan")}}, "similarity_temperature must be a positive finite"),
        ({"config": {"position_grid": [2, 10**6]}}, "position_grid must be two integers"),
        ({"config": {"backbone": "resnet9000"}}, "backbone must be one of"),
        ({"score_scale": {"mos_max": float("inf")}}, "must be finite"),
        ({"tensors": lambda t: t.update(text_embeddings=t["text_embeddings"].to(torch.int32))}, "is stored as I32"),
    ],
)
def test_malformed_checkpoints_are_refused_naming_the_file(tiny_checkpoints, tmp_path, change, message):
    bad = hostile_checkpoint(tiny_checkpoints["nr"], tmp_path / "bad.safetensors", **change)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(bad)
    assert "bad.safetensors" in str(info.value)


def test_non_finite_tensors_are_refused(tiny_checkpoints, tmp_path):
    def poison(tensors):
        name = next(k for k in tensors if k.startswith("regressor"))
        tensors[name] = tensors[name].clone().fill_(float("nan"))

    bad = hostile_checkpoint(tiny_checkpoints["nr"], tmp_path / "nan.safetensors", tensors=poison)
    with pytest.raises(CheckpointError, match=r"nan.safetensors: tensor 'regressor.*NaN or Inf"):
        load_checkpoint(bad)


def test_bundled_fp16_models_still_load():
    for mode in ("nr", "fr"):
        assert load_checkpoint(mode=mode).mode == mode


def test_a_folder_or_fifo_is_not_a_checkpoint(tmp_path, monkeypatch, no_hang):
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "folder.safetensors")
    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(CheckpointError, match="is a FIFO"):
        load_checkpoint(tmp_path / "pipe.safetensors")
    monkeypatch.setenv("BPCLIP_CHECKPOINT", str(tmp_path / "pipe.safetensors"))
    with pytest.raises(CheckpointError, match="is a FIFO"):
        load_checkpoint()


def flip_bit_in_tensor_data(path: Path, out: Path, offset_in_data: int, bit: int = 6) -> Path:
    """A copy of a safetensors file with one bit flipped ``offset_in_data`` bytes into its tensor data."""
    data = bytearray(path.read_bytes())
    header_length = struct.unpack("<Q", data[:8])[0]
    data[8 + header_length + offset_in_data] ^= 1 << bit
    out.write_bytes(bytes(data))
    return out


def test_a_flipped_bit_in_a_bundled_model_is_refused(tmp_path, monkeypatch):
    from bpclip_core.weights.checkpoint import bundled_checkpoint

    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)
    bundled = bundled_checkpoint("bpclip-nr")
    # an odd byte of a little-endian fp16 weight holds its exponent: one flip changes the value a lot
    corrupt = flip_bit_in_tensor_data(bundled, home / "checkpoints" / "bpclip-nr.safetensors", 4001)
    monkeypatch.setenv("BPCLIP_HOME", str(home))
    with pytest.raises(CheckpointError, match=r"bpclip-nr.safetensors: the tensors do not match the integrity digest"):
        load_checkpoint()
    monkeypatch.delenv("BPCLIP_HOME")
    monkeypatch.setenv("BPCLIP_CHECKPOINT", str(corrupt))
    with pytest.raises(CheckpointError, match="integrity digest"):
        load_checkpoint()


def test_saved_checkpoints_carry_a_digest_and_old_ones_without_it_still_load(tiny_checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    from bpclip_core.weights.checkpoint import DIGEST_KEY, METADATA_KEY, read_metadata, tensor_digest

    metadata = read_metadata(tiny_checkpoints["nr"])
    assert metadata[DIGEST_KEY] == tensor_digest(load_file(str(tiny_checkpoints["nr"])))
    for name in ("bpclip-nr", "bpclip-fr"):  # the bundled models are stamped at export
        from bpclip_core.weights.checkpoint import bundled_checkpoint

        assert read_metadata(bundled_checkpoint(name))[DIGEST_KEY].startswith("sha256:")
    del metadata[DIGEST_KEY]
    legacy = tmp_path / "legacy.safetensors"
    save_file(load_file(str(tiny_checkpoints["nr"])), str(legacy), metadata={METADATA_KEY: json.dumps(metadata)})
    assert load_checkpoint(legacy).mode == "nr"


def test_deeply_nested_metadata_is_a_checkpoint_error(tiny_checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    from bpclip_core.weights.checkpoint import METADATA_KEY

    deep = tmp_path / "deep.safetensors"
    text = '{"format": "bpclip-checkpoint", "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    save_file(load_file(str(tiny_checkpoints["nr"])), str(deep), metadata={METADATA_KEY: text})
    with pytest.raises(CheckpointError, match="deep.safetensors: the BPCLIP metadata is nested too deeply"):
        load_checkpoint(deep)
