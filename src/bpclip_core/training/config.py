"""The training recipe as one dataclass, defaulting to the paper's settings.

Paper defaults: 384x384 random crops with horizontal and vertical flips, AdamW (weight
decay 1e-5; lr 1e-4 for FR, 3e-5 for NR), cosine annealing (T_max 50, eta_min 0), 200
epochs, frozen BatchNorm and text tower, MSE on MOS normalised to [0, 1] (eq. 10).

Every field can be set from a YAML or JSON file (:meth:`TrainConfig.from_file`) and
overridden by command-line flags (``--set key=value`` for any field).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpclip_core.choices import DEFAULT_PROTOCOL, PRECISIONS, PROTOCOLS

PAPER_LR = {"fr": 1e-4, "nr": 3e-5}

SCHEDULES: tuple[str, ...] = ("restarts", "cosine-epoch")

# Fields added after runs were written, with the value that reproduces those runs.
FIELDS_BEFORE_THEY_EXISTED: dict[str, Any] = {
    "group_size": 1, "ranking_loss_weight": 0.0, "schedule": "cosine-epoch", "eval_num_crops": 5,
    "precision": "auto", "channels_last": None, "compile": False, "train_batchnorm": False,
    "recalibrate_batchnorm": False,
}  # fmt: skip

# Fields that may change between a run and its resumption without changing its result.
RESUME_NEUTRAL_FIELDS = frozenset(
    {"epochs", "out_dir", "progress", "tensorboard", "num_workers", "device", "resume_every", "eval_batch_size"}
)


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults follow the paper.

    Attributes:
        dataset: reader kind (``live csiq tid2013 kadid10k clive koniq10k spaq csv pyiqa``).
        dataset_root: the dataset folder (for ``csv``/``pyiqa``: the CSV file).
        dataset_options: extra keyword arguments of the reader (e.g. ``image_root``).
        splits_file: a split file from ``bpclip splits``; None makes a split from ``split_seed``.
        split_index: which split of the file to use.
        split_seed: the seed of the split made when there is no split file.
        split_ratios: train/val/test ratios (default: 6:2:2 FR, 8:0:2 NR).
        model: model preset (``paper`` or ``tiny``); ``mode`` defaults to the dataset's.
        model_overrides: BPCLIPConfig fields to change from the preset.
        init_checkpoint: start from this checkpoint (e.g. from ``bpclip init-checkpoint``).
        init_backbone: copy the backbone (weights and frozen BatchNorm statistics) of this
            checkpoint, of either mode, into the new model (e.g. an NR model starting from a
            trained FR model's backbone); the rest starts as ``init_checkpoint``/preset says.
        train_batchnorm: let the backbone's BatchNorm train (batch statistics, running averages,
            learned affine) instead of freezing it as the paper does for its pretrained backbone.
            For random initialisation: a frozen BatchNorm lets the feature scale drift as the
            convolutions train (docs/training.md).
        recalibrate_batchnorm: with ``init_backbone``, measure the donor backbone's BatchNorm
            statistics anew on this run's training images (as for a random backbone), e.g. for
            a trained backbone whose convolutions outgrew its frozen statistics.
        pretrained: without ``init_checkpoint``, use ImageNet backbone and CLIP text weights
            from the local caches (False: random initialisation).
        allow_download: allow downloading missing pretrained weights.
        epochs, batch_size, patch_size (None: the model's image_size), hflip, vflip.
        lr (None: the paper's 1e-4 FR / 3e-5 NR), weight_decay, t_max (0: the whole run), eta_min.
        schedule: how ``t_max`` (the paper's "T_max = 50" over 200 epochs) is read.
            ``restarts`` (default): cosine cycles of ``t_max`` epochs, stepped every
            iteration, each ending at ``eta_min`` (200 epochs = 4 cycles; the last epoch, the
            kept NR model, trains at the minimum). ``cosine-epoch``: torch's
            CosineAnnealingLR stepped per epoch (it climbs back after ``t_max`` epochs: lr 0
            at epochs 51 and 151, the peak again at 199-200), as the bundled models were made.
        adjective_loss_weight: weight of the auxiliary explanation loss (training/losses.py;
            0, the paper's recipe, trains through the MOS alone). Needs distortion types.
        group_size: items of one reference picture placed together in a batch (1: plain
            shuffling); above 1 the items of a group also share their crop and flips, and
            ``batch_size`` must be a multiple of it.
        ranking_loss_weight: weight of the within-reference ranking loss (training/losses.py;
            beyond the paper): needs ``group_size`` > 1.
        seed: seeds the initialisation, the data order and the augmentation.
        num_workers: DataLoader processes (None: 0 on the CPU, where they would take the model's
            cores, else up to 8, one core left); batches are pinned on CUDA. cache_images keeps
            decoded images in memory.
        precision: ``auto`` (bf16 autocast on CUDA, fp16 with a gradient scaler where bf16 is
            not native, fp32 elsewhere), ``fp32``, ``bf16`` or ``fp16``; losses are fp32 either way.
        channels_last: run the model in channels_last layout (None: on CUDA).
        compile: wrap the model in ``torch.compile``.
        eval_protocol: the test-time protocol of validation and test (``resize``, ``crops``,
            ``full``; default the engine's, so reported figures describe users' scores), at the
            training patch size; eval_num_crops for ``crops``; eval_batch_size (None: batch_size).
        device: ``auto`` (cuda if available), ``cpu``, ``cuda`` ...
        out_dir: the run folder (checkpoints, logs, report).
        resume_every: write the resume checkpoint every this many epochs (and at the end).
        tensorboard: also log to TensorBoard; progress: show tqdm bars.
        max_steps_per_epoch: cap on optimiser steps per epoch (smoke tests, benchmarks).
    """

    dataset: str = "csv"
    dataset_root: str = ""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    splits_file: str | None = None
    split_index: int = 0
    split_seed: int = 0
    split_ratios: list[float] | None = None
    model: str = "paper"
    mode: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str | None = None
    init_backbone: str | None = None
    train_batchnorm: bool = False
    recalibrate_batchnorm: bool = False
    pretrained: bool = True
    allow_download: bool = False
    epochs: int = 200
    batch_size: int = 8
    patch_size: int | None = None
    hflip: bool = True
    vflip: bool = True
    lr: float | None = None
    weight_decay: float = 1e-5
    t_max: int = 50
    eta_min: float = 0.0
    schedule: str = "restarts"
    adjective_loss_weight: float = 0.0
    group_size: int = 1
    ranking_loss_weight: float = 0.0
    seed: int = 0
    num_workers: int | None = None
    cache_images: bool = False
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    eval_protocol: str = DEFAULT_PROTOCOL
    eval_num_crops: int = 5
    eval_batch_size: int | None = None
    device: str = "auto"
    out_dir: str = "runs/bpclip"
    resume_every: int = 1
    tensorboard: bool = False
    progress: bool = True
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.resume_every < 1:
            raise ValueError("epochs, batch_size and resume_every must be at least 1")
        if self.mode not in (None, "nr", "fr"):
            raise ValueError(f"mode must be 'nr', 'fr' or unset, got {self.mode!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.t_max < 0:
            raise ValueError("t_max must be at least 1, or 0 for the whole run")
        if self.adjective_loss_weight < 0 or self.ranking_loss_weight < 0:
            raise ValueError("adjective_loss_weight and ranking_loss_weight must not be negative")
        if self.group_size < 1 or self.batch_size % self.group_size:
            raise ValueError(f"group_size must be at least 1 and divide batch_size ({self.batch_size})")
        if self.eval_protocol not in PROTOCOLS:
            retired = " ('center-crop' was retired: evaluation uses the engine's protocols)" * (
                self.eval_protocol == "center-crop"
            )
            raise ValueError(f"eval_protocol must be one of {PROTOCOLS}, got {self.eval_protocol!r}{retired}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError("num_workers must be at least 0, or unset for the device's default")
        if self.eval_num_crops < 1:
            raise ValueError("eval_num_crops must be at least 1")
        if self.recalibrate_batchnorm and not self.init_backbone:
            raise ValueError("recalibrate_batchnorm needs init_backbone (a random backbone is always calibrated)")
        if self.ranking_loss_weight > 0 and self.group_size < 2:
            raise ValueError("ranking_loss_weight needs group_size >= 2 (pairs of the same reference in a batch)")

    def loader_workers(self, device: Any) -> int:
        """``num_workers``, or its default for ``device`` (a torch.device)."""
        if self.num_workers is not None:
            return self.num_workers
        return 0 if device.type == "cpu" else min(8, max(0, (os.cpu_count() or 1) - 1))

    def learning_rate(self, mode: str) -> float:
        """The configured lr, or the paper's default for ``mode``."""
        return self.lr if self.lr is not None else PAPER_LR[mode]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def result_defining(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUME_NEUTRAL_FIELDS}

    def differences(self, stored: dict[str, Any], ignore: frozenset[str] = frozenset()) -> dict[str, tuple]:
        """The result-defining fields (less ``ignore``) on which ``stored``, a config a run wrote
        earlier, differs from this one: ``{field: (stored, now)}``. A field added after that run
        was written counts with the value that reproduces it (``FIELDS_BEFORE_THEY_EXISTED``)."""
        current = {k: v for k, v in json.loads(json.dumps(self.result_defining())).items() if k not in ignore}
        before = {k: v for k, v in FIELDS_BEFORE_THEY_EXISTED.items() if k in current} | {
            k: v for k, v in stored.items() if k not in RESUME_NEUTRAL_FIELDS and k not in ignore
        }
        return {
            k: (before.get(k), current.get(k))
            for k in sorted(before.keys() | current.keys())
            if before.get(k) != current.get(k)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config fields: {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML (``.yaml``/``.yml``) or JSON file, then apply ``overrides``."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"training config file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                raise ValueError("reading YAML configs needs PyYAML (pip install pyyaml), or use JSON") from exc
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a training config must be a mapping of field names to values")
        return cls.from_dict({**data, **overrides})


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (numbers, booleans, lists, null) or JSON."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        import yaml

        value = yaml.safe_load(raw)
    except ImportError:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
    return key.strip().replace("-", "_"), value
