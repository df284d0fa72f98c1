"""Training BPCLIP with the paper's recipe, resumable and runnable under ``torchrun``.

A run folder (``TrainConfig.out_dir``) holds:

* ``best.safetensors``: the best model so far by validation SRCC (the last epoch when the
  split has no validation part), a normal bpclip checkpoint with trained provenance and
  the dataset's score scale;
* ``resume.pt``: model, optimiser, scheduler, RNG states, epoch and history, written
  atomically every ``resume_every`` epochs; only tensors and plain Python values, read
  back with ``torch.load(weights_only=True)`` (nothing arbitrary is unpickled);
* ``train_config.json``, ``split.json``, ``log.csv``, ``tensorboard/`` and ``report/``.

Determinism: the data order and augmentation of epoch e depend only on (seed, e), so a
run killed at any moment and resumed reproduces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bpclip_core.errors import BPCLIPError
from bpclip_core.model.adjectives import Adjective
from bpclip_core.model.bpclip import BPCLIP, ModelCard
from bpclip_core.model.config import preset
from bpclip_core.training.config import TrainConfig
from bpclip_core.training.distributed import (
    DistributedContext,
    barrier,
    cleanup_distributed,
    epoch_order,
    grouped_epoch_order,
    mean_across_ranks,
    setup_distributed,
)
from bpclip_core.training.losses import adjective_loss, adjective_targets, quality_loss, ranking_loss
from bpclip_core.weights.checkpoint import non_finite_tensors

RESUME_FORMAT = "bpclip-resume"
RESUME_VERSION = 1
BEST_NAME = "best.safetensors"
RESUME_NAME = "resume.pt"
# train_loss is the weighted sum that is optimised; the *_loss terms are its parts, unweighted
# (adjective_loss and ranking_loss only where their weight is above 0)
LOSS_TERMS = ("quality_loss", "adjective_loss", "ranking_loss")
LOG_COLUMNS = ("epoch", "train_loss", *LOSS_TERMS, "lr", "val_srcc", "val_plcc", "seconds")


class TrainingError(BPCLIPError, ValueError):
    """A run cannot start or resume as asked (e.g. a resume checkpoint from another config)."""


class NonFiniteLossError(TrainingError):
    """A training step's loss is NaN or Inf (on this rank or another); no weight was changed."""

    def __init__(self, value: float) -> None:
        super().__init__(f"the training loss is {value} (not finite)")
        self.value = value


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    best_checkpoint: Path
    best_epoch: int
    history: list[dict[str, Any]]
    test_metrics: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CosineRestarts:
    """The lr factor of iteration ``step``: cosine cycles of ``cycle_steps`` iterations, each from
    the peak (1) at its first step to ``floor`` at its last (our reading of the paper's T_max)."""

    def __init__(self, cycle_steps: int, floor: float) -> None:
        self.cycle_steps, self.floor = cycle_steps, floor

    def __call__(self, step: int) -> float:
        position = (step % self.cycle_steps) / max(self.cycle_steps - 1, 1)  # 0 at a cycle's start, 1 at its end
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * position))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The lr schedule of ``config.schedule`` (``t_max: 0``: one cycle over the whole run)."""
    t_max = config.t_max or config.epochs
    if config.schedule == "cosine-epoch":  # stepped once per epoch
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=config.eta_min)
    floor = config.eta_min / optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineRestarts(t_max * steps_per_epoch, floor))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters with ``weight_decay``; a learned temperature is not decayed (as CLIP's
    logit scale is not: decay would pull it towards temperature 1)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for name, p in named if name != "log_logit_scale"], "weight_decay": weight_decay}]
    undecayed = [p for name, p in named if name == "log_logit_scale"]
    return groups + [{"params": undecayed, "weight_decay": 0.0}] * bool(undecayed)


@dataclass
class StepNumerics:
    """How a training step runs: autocast dtype (None: fp32), fp16's gradient scaler, layout."""

    autocast_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    @classmethod
    def for_device(cls, device: torch.device, precision: str, channels_last: bool | None) -> StepNumerics:
        """``precision`` ``auto`` is bf16 on CUDA (fp16 with a scaler where bf16 is not native), fp32 elsewhere;
        ``channels_last`` None is on for CUDA."""
        from bpclip_core.running.engine import autocast_dtype

        dtype = autocast_dtype(device, precision)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(dtype, scaler, device.type == "cuda" if channels_last is None else channels_last)

    def inputs(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch on the device (pinned batches copy asynchronously) in the step's layout."""
        tensor = tensor.to(device, non_blocking=True)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    device: torch.device,
    adjective_weight: float = 0.0,
    adjectives: tuple[Adjective, ...] = (),
    ranking_weight: float = 0.0,
    numerics: StepNumerics | None = None,
    terms: dict[str, float] | None = None,
) -> tuple[float, int]:
    """One optimiser step on a batch from :class:`QualityImages`; returns (loss, batch size).

    ``model`` returns (score, level probabilities) (:class:`TensorOutputs`); with
    ``adjective_weight`` > 0 the auxiliary explanation loss is added, with ``ranking_weight``
    > 0 the within-picture ranking loss (see losses.py). ``numerics``: mixed precision and
    layout (default fp32, as laid out); the losses are computed in fp32 either way. ``terms``,
    when given, receives each loss term of the step unweighted (``LOSS_TERMS``).
    """
    numerics = numerics or StepNumerics()
    reference = numerics.inputs(batch["reference"], device) if "reference" in batch else None
    with numerics.autocast(device):
        predicted, level_probabilities = model(numerics.inputs(batch["distorted"], device), reference)
    predicted, level_probabilities = predicted.float(), level_probabilities.float()
    target = batch["target"].to(device)
    parts = {"quality_loss": quality_loss(predicted, target)}  # eq. 10
    loss = parts["quality_loss"]
    if adjective_weight > 0:
        targets, mask = adjective_targets(batch["distortion"], batch["target"], adjectives)
        parts["adjective_loss"] = adjective_loss(level_probabilities, targets.to(device), mask.to(device))
        loss = loss + adjective_weight * parts["adjective_loss"]
    if ranking_weight > 0:
        parts["ranking_loss"] = ranking_loss(predicted, target, torch.as_tensor(batch["group"]).to(device))
        loss = loss + ranking_weight * parts["ranking_loss"]
    optimizer.zero_grad(set_to_none=True)
    finite = torch.isfinite(loss.detach()).to(torch.int32)
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank stops, or none
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not bool(finite):
        raise NonFiniteLossError(float(loss.detach()))  # before backward: this step changes no weight
    if numerics.scaler is None:
        loss.backward()
        optimizer.step()
    else:  # fp16: scaled gradients; a step whose gradients overflow is skipped and the scale lowered
        numerics.scaler.scale(loss).backward()
        numerics.scaler.step(optimizer)
        numerics.scaler.update()
    # one device-to-host copy per step for the loss and its terms (not one sync each)
    total, *term_values = torch.stack([loss.detach(), *(value.detach() for value in parts.values())]).tolist()
    if terms is not None:
        terms.update(zip(parts, term_values))
    return total, len(predicted)


class TensorOutputs(nn.Module):
    """Wraps BPCLIP so DDP sees plain tensors: (score, level probabilities)."""

    def __init__(self, model: BPCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, distorted: torch.Tensor, reference: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(distorted, reference)
        return output.score, output.level_probabilities


def load_training_data(config: TrainConfig):
    """The dataset and the split this config trains on (a split file, or one made from split_seed)."""
    from bpclip_core.data.readers import read_dataset
    from bpclip_core.data.splits import content_split, load_splits

    if not config.dataset_root:
        raise TrainingError("no dataset given: set dataset and dataset_root (e.g. --dataset csv --data FILE.csv)")
    dataset = read_dataset(config.dataset, config.dataset_root, **config.dataset_options)
    if config.splits_file:
        splits = load_splits(config.splits_file, dataset)
        if not 0 <= config.split_index < len(splits.splits):
            raise TrainingError(
                f"split_index {config.split_index} out of range: {config.splits_file} holds {len(splits.splits)} splits"
            )
        split = splits.splits[config.split_index]
    else:
        split = content_split(dataset, config.split_seed, config.split_ratios)
    return dataset, split


def build_model(config: TrainConfig, mode: str) -> BPCLIP:
    """The starting model: ``init_checkpoint`` if given, else a preset built from (optionally pretrained) weights."""
    from bpclip_core.model.backbone import build_backbone
    from bpclip_core.model.text import initial_anchors
    from bpclip_core.weights.checkpoint import load_checkpoint

    torch.manual_seed(config.seed)
    if config.init_checkpoint:
        model = load_checkpoint(config.init_checkpoint, mode=mode)  # type: ignore[arg-type]
    else:
        model_config = preset(config.model, mode, **config.model_overrides)  # type: ignore[arg-type]
        backbone = build_backbone(model_config.backbone, config.pretrained, config.allow_download)
        card = ModelCard()
        adjectives, template = card.adjectives, card.prompt_template
        text = initial_anchors(model_config, adjectives, template, config.pretrained, config.allow_download)
        model = BPCLIP(model_config, text, card, backbone)
    if config.init_backbone:
        donor = load_checkpoint(config.init_backbone)
        if donor.config.backbone != model.config.backbone:
            raise TrainingError(
                f"init_backbone {config.init_backbone} has a {donor.config.backbone} backbone, "
                f"this model a {model.config.backbone}"
            )
        model.backbone.load_state_dict(donor.backbone.state_dict())
        model.card.provenance = {**model.card.provenance, "backbone_initialised_from": str(config.init_backbone)}
    return model


@torch.no_grad()
def calibrate_batchnorm(backbone: nn.Module, batches) -> None:
    """Set the BatchNorm running statistics of a backbone from images (cumulative average).

    The paper freezes BatchNorm of an ImageNet-pretrained backbone. A random backbone has
    statistics (0, 1) that match nothing, which leaves deep levels saturated; so for random
    initialisation the statistics are measured once on training images, then frozen. The same
    measurement re-fits a copied backbone's statistics (``recalibrate_batchnorm``).
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    modes = [norm.training for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
        nn.Module.train(norm, True)
    for images in batches:
        backbone(images)
    for norm, mode in zip(norms, modes):
        norm.momentum = 0.1
        norm.train(mode)  # frozen stays frozen; a training BatchNorm keeps training


def _atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        torch.save(payload, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the partial files a killed run left in ``folder`` (``.resume.pt.<pid>.partial`` of
    a process that no longer runs, ``.log.csv.partial``); returns what was removed."""
    removed = []
    for path in folder.glob(".*.partial"):
        pid_part = path.name.removesuffix(".partial").rsplit(".", 1)[-1]
        if pid_part.isdigit() and _pid_alive(int(pid_part)) and int(pid_part) != os.getpid():
            continue  # a live writer's file
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def read_resume_state(path: Path) -> dict[str, Any]:
    """Load a resume checkpoint safely (``weights_only=True``) and check its format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path} is not a readable resume checkpoint (corrupt or truncated?): {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise TrainingError(f"{path} is not a bpclip resume checkpoint")
    return state


class Trainer:
    """Trains one model on one split of one dataset.

    Args:
        config: the recipe (paper defaults).
        dataset, split: optional, already read (otherwise from ``config``).
    """

    def __init__(self, config: TrainConfig, dataset=None, split=None) -> None:
        self.config = config
        if dataset is None:
            dataset, split = load_training_data(config)
        elif split is None:
            from bpclip_core.data.splits import content_split

            split = content_split(dataset, config.split_seed, config.split_ratios)
        self.dataset = dataset
        self.split = split
        self.mode = config.mode or dataset.mode
        if self.mode == "fr" and dataset.mode != "fr":
            raise TrainingError(f"mode 'fr' needs reference images, but {dataset.name} has none")
        self.out_dir = Path(config.out_dir)

    # ------------------------------------------------------------------ helpers

    def _log(self, context: DistributedContext, message: str) -> None:
        if context.is_main:
            print(message, file=sys.stderr, flush=True)

    def _card(self, model: BPCLIP, epoch: int, val_metrics: dict[str, float] | None) -> ModelCard:
        provenance = {
            **{k: v for k, v in model.card.provenance.items() if k not in ("trained",)},
            "trained": True,
            "dataset": self.dataset.name,
            "epochs": epoch,
            "epochs_planned": self.config.epochs,
            "split": self.split.name,
            "seed": self.config.seed,
            "lr": self.config.learning_rate(self.mode),
            "validation": val_metrics,
            "recipe": "bpclip train",
        }
        return ModelCard(model.card.adjectives, model.card.prompt_template, self.dataset.score_scale, provenance)

    def _save_best(self, model: BPCLIP, epoch: int, val_metrics: dict[str, float] | None) -> Path:
        from bpclip_core.weights.checkpoint import save_checkpoint

        original = model.card
        model.card = self._card(model, epoch, val_metrics)
        try:
            return save_checkpoint(model, self.out_dir / BEST_NAME)
        finally:
            model.card = original

    def _non_finite_message(self, what: str, epoch: int) -> str:
        """Why the run stopped, what is kept, and what usually helps."""
        kept = (
            f"the checkpoints in {self.out_dir} hold weights from before epoch {epoch + 1} (nothing non-finite is "
            f"ever written)"
            if epoch > 0
            else "no checkpoint was written"
        )
        return (
            f"training stopped: {what}; {kept}. Usual causes: a learning rate too high for the batch size "
            f"(lower lr, e.g. halve it), or fp16 without a loss scaler; start a new run with the change"
        )

    def _write_log(self, history: list[dict[str, Any]]) -> None:
        path = self.out_dir / "log.csv"
        partial = path.with_name(".log.csv.partial")
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in LOG_COLUMNS} for row in history)
        partial.replace(path)

    def _check_fresh_folder(self) -> None:
        existing = [name for name in (RESUME_NAME, BEST_NAME) if (self.out_dir / name).exists()]
        if existing:
            raise TrainingError(
                f"{self.out_dir} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                f"or choose another output folder (nothing was overwritten)"
            )

    # ------------------------------------------------------------------ the run

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (continuing a run with ``resume``) and test the best model."""
        context = setup_distributed(self.config.device)
        try:
            return self._fit(context, resume)
        finally:
            cleanup_distributed()

    def _fit(self, context: DistributedContext, resume: bool) -> TrainResult:
        from bpclip_core.data.transforms import QualityImages, reference_groups
        from bpclip_core.inputs.protocol import TestTimeProtocol
        from bpclip_core.training.evaluation import dataset_targets, predict, quality_metrics

        config = self.config
        resume_path = self.out_dir / RESUME_NAME
        if context.is_main and self.out_dir.is_dir():
            for stale in remove_stale_partials(self.out_dir):
                self._log(context, f"removed {stale.name}, left by a killed run")
        state = None
        if resume and resume_path.exists():
            state = read_resume_state(resume_path)
            self._check_resume_config(state, resume_path)
        elif not resume and context.is_main:
            self._check_fresh_folder()
        barrier(context)
        if context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=1))
            split_record = {"dataset": self.dataset.name, "num_items": len(self.dataset), **self.split.__dict__}
            (self.out_dir / "split.json").write_text(json.dumps(split_record))

        model = build_model(config, self.mode)
        if config.train_batchnorm:
            model.backbone.set_batchnorm_training(True)  # before the optimiser, which then gets its affine parameters
        patch = config.patch_size or model.config.image_size
        device = context.device
        model.to(device).train()
        lr = config.learning_rate(self.mode)
        optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=lr)
        train_set = self.dataset.subset(self.split.train, f"{self.dataset.name}-train")
        groups = reference_groups(train_set)
        steps_per_epoch = -(-len(self._epoch_order(groups, 0, context)) // config.batch_size)  # the same every epoch
        scheduler = build_scheduler(optimizer, config, steps_per_epoch)
        fresh_backbone = not (config.init_checkpoint or config.init_backbone or config.pretrained)
        if (fresh_backbone or config.recalibrate_batchnorm) and state is None:
            calibrate_batchnorm(model.backbone, self._calibration_batches(train_set, patch, device))
        numerics = StepNumerics.for_device(device, config.precision, config.channels_last)
        if numerics.channels_last:
            model.to(memory_format=torch.channels_last)
        history: list[dict[str, Any]] = []
        start_epoch, best_epoch, best_srcc = 0, 0, -float("inf")
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            random.setstate(_python_rng_from_json(state["python_rng"]))
            if numerics.scaler is not None and "scaler" in state:
                numerics.scaler.load_state_dict(state["scaler"])
            start_epoch = int(state["epoch"])
            best_epoch, best_srcc = int(state["best_epoch"]), float(state["best_srcc"])
            history = json.loads(state["history"])
            self._log(context, f"resuming {self.out_dir} after epoch {start_epoch}")
        elif resume:
            self._log(context, f"no resume checkpoint in {self.out_dir}; starting from the beginning")

        wrapped: nn.Module = TensorOutputs(model)
        if context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            wrapped = torch.compile(wrapped)
        workers = config.loader_workers(device)

        val_set = self.dataset.subset(self.split.val, f"{self.dataset.name}-val") if self.split.val else None
        with_reference = self.mode == "fr"  # an NR model trained on an FR dataset sees its distorted images
        train_images = QualityImages(
            train_set,
            patch,
            True,
            config.seed,
            config.hflip,
            config.vflip,
            cache=config.cache_images,
            with_reference=with_reference,
            shared_crops=config.group_size > 1,
        )
        # validation and test see images as users' scores do: the engine's protocol at the model's size
        protocol = TestTimeProtocol(config.eval_protocol, size=model.config.image_size, num_crops=config.eval_num_crops)
        eval_batch = config.eval_batch_size or config.batch_size
        writer = self._tensorboard(context)

        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            train_images.set_epoch(epoch)
            order = self._epoch_order(groups, epoch, context)
            loader = torch.utils.data.DataLoader(
                train_images,
                batch_size=config.batch_size,
                sampler=order,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            current_lr = optimizer.param_groups[0]["lr"]
            total, count = 0.0, 0
            term_totals: dict[str, float] = {}
            batches = loader
            if config.progress and context.is_main:
                from tqdm.auto import tqdm

                batches = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)
            for step, batch in enumerate(batches, 1):
                step_terms: dict[str, float] = {}
                try:
                    loss, size = train_step(
                        wrapped, optimizer, batch, device, config.adjective_loss_weight, model.card.adjectives,
                        config.ranking_loss_weight, numerics, step_terms,
                    )  # fmt: skip
                except NonFiniteLossError as exc:
                    where = f"{exc} at epoch {epoch + 1}, step {step}"
                    raise TrainingError(self._non_finite_message(where, epoch)) from None
                total += loss * size
                count += size
                for name, value in step_terms.items():
                    term_totals[name] = term_totals.get(name, 0.0) + value * size
                if config.schedule == "restarts":
                    scheduler.step()
            if config.schedule == "cosine-epoch":
                scheduler.step()
            train_loss = mean_across_ranks(total / max(count, 1), context)

            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss}
            row.update({name: mean_across_ranks(value / max(count, 1), context) for name, value in term_totals.items()})
            row["lr"] = current_lr
            broken = non_finite_tensors(model.state_dict())  # a finite loss can still leave Inf/NaN weights
            if broken:
                what = f"{len(broken)} weight tensors ({broken[0]}, ...) hold NaN or Inf after epoch {epoch + 1}"
                raise TrainingError(self._non_finite_message(what, epoch))
            if context.is_main:
                val_metrics = None
                if val_set is not None:
                    predictions = predict(model, val_set, protocol, eval_batch, device, workers)
                    targets, mos = dataset_targets(val_set)
                    val_metrics = quality_metrics(predictions, targets, mos)
                    row.update(val_srcc=val_metrics["srcc"], val_plcc=val_metrics["plcc"])
                improved = val_metrics is None or val_metrics["srcc"] > best_srcc
                if improved:
                    best_epoch, best_srcc = epoch + 1, (val_metrics or {}).get("srcc", best_srcc)
                    self._save_best(model, epoch + 1, val_metrics)
                row["seconds"] = round(time.perf_counter() - started, 3)
                history.append(row)
                self._write_log(history)
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch" and isinstance(value, float):
                            writer.add_scalar(key, value, epoch + 1)
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
                self._log(context, f"epoch {epoch + 1}/{config.epochs}: {shown}" + (" *best*" if improved else ""))
                if (epoch + 1) % config.resume_every == 0 or epoch + 1 == config.epochs:
                    progress = (epoch + 1, best_epoch, best_srcc, history)
                    self._save_resume(model, optimizer, scheduler, numerics.scaler, *progress)
            barrier(context)

        if writer is not None:
            writer.close()
        result = TrainResult(self.out_dir, self.out_dir / BEST_NAME, best_epoch, history)
        if context.is_main:
            result.test_metrics = self._test_and_report(history, protocol, eval_batch, device)
        barrier(context)
        return result

    def _epoch_order(self, groups: list[int], epoch: int, context: DistributedContext) -> list[int]:
        """This rank's item order in ``epoch`` (runs of one picture with ``group_size`` > 1), capped."""
        config = self.config
        if config.group_size > 1:
            order = grouped_epoch_order(groups, config.group_size, config.seed, epoch, context)
        else:
            order = epoch_order(len(groups), config.seed, epoch, context)
        if config.max_steps_per_epoch is not None:
            order = order[: config.max_steps_per_epoch * config.batch_size]
        return order

    def _calibration_batches(self, train_set, patch: int, device, count: int = 64):
        from bpclip_core.data.transforms import QualityImages

        images = QualityImages(train_set.subset(list(range(min(count, len(train_set))))), patch, train=False)
        for batch in torch.utils.data.DataLoader(images, batch_size=16):
            yield batch["distorted"].to(device)
            if "reference" in batch:
                yield batch["reference"].to(device)

    def _tensorboard(self, context: DistributedContext):
        if not (self.config.tensorboard and context.is_main):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _check_resume_config(self, state: dict[str, Any], path: Path) -> None:
        different = self.config.differences(json.loads(state["config"]))
        if different:
            details = "; ".join(f"{k}: checkpoint {was!r} vs now {now!r}" for k, (was, now) in different.items())
            raise TrainingError(
                f"{path} was written by a run with a different config ({details}); resume with the same "
                f"config, or start a new run in another folder"
            )

    def _save_resume(self, model, optimizer, scheduler, scaler, epoch, best_epoch, best_srcc, history) -> None:
        payload = {
            "format": RESUME_FORMAT,
            "version": RESUME_VERSION,
            "config": json.dumps(self.config.result_defining()),
            "epoch": epoch,
            "best_epoch": best_epoch,
            "best_srcc": float(best_srcc),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": json.dumps(random.getstate()),
            "history": json.dumps(history),
        }
        if scaler is not None:  # fp16's loss scale, so that a resumed run continues exactly
            payload["scaler"] = scaler.state_dict()
        _atomic_torch_save(payload, self.out_dir / RESUME_NAME)

    def _test_and_report(self, history, protocol, eval_batch: int, device) -> dict[str, float] | None:
        from bpclip_core.training.evaluation import evaluate_model
        from bpclip_core.training.reports import write_report
        from bpclip_core.weights.checkpoint import load_checkpoint

        details = {
            "dataset": self.dataset.name,
            "split": self.split.name,
            "train/val/test items": f"{len(self.split.train)}/{len(self.split.val)}/{len(self.split.test)}",
            "mode": self.mode,
            "protocol": protocol.describe(),
            "epochs": self.config.epochs,
            "checkpoint": str(self.out_dir / BEST_NAME),
        }
        if len(self.split.test) < 3:
            write_report(
                self.out_dir / "report", f"{self.dataset.name}: training", {}, history=history, details=details
            )
            return None
        best = load_checkpoint(self.out_dir / BEST_NAME, device=device)
        details["best epoch"] = best.card.provenance.get("epochs")
        test_set = self.dataset.subset(self.split.test, f"{self.dataset.name}-test")
        workers = self.config.loader_workers(device)
        metrics, predictions = evaluate_model(best, test_set, protocol, eval_batch, device, workers)
        write_report(
            self.out_dir / "report",
            f"{self.dataset.name} ({self.split.name}) test",
            metrics,
            predictions,
            [item.mos for item in test_set.items],
            history,
            details,
        )
        print(
            f"test on {len(test_set)} items: SRCC {metrics['srcc']:.4f}, PLCC {metrics['plcc']:.4f}; "
            f"report in {self.out_dir / 'report'}",
            file=sys.stderr,
        )
        return metrics


def _python_rng_from_json(text: str) -> tuple:
    version, internal, gauss = json.loads(text)
    return version, tuple(internal), gauss


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train with ``config`` (see :class:`Trainer`)."""
    return Trainer(config).fit(resume=resume)
