"""Training BPCLIP's heads on a frozen backbone: each image's five levels computed once, then cached.

The paper fine-tunes its ImageNet ResNet50 with BatchNorm frozen. On two CPU cores a pass of a
pretrained backbone is most of a training step, and a frozen backbone gives an image the same
F_1..F_5 at every epoch. So the bundled models' recipe freezes it (weights and BatchNorm), writes
each training image's levels once to float16 memory-mapped ``.npy`` files (resumable, batch by
batch), and trains everything after the backbone (gated pooling, tokens, MSCA, SA, fusion, CLIP
space, regressor: eq. 1-9, the losses of :mod:`.losses`) for many epochs over that cache. Why
written here: no library caches a multi-level backbone's maps for a head that pools them itself;
:mod:`.trainer` (``bpclip train``) remains the path that fine-tunes the whole network.

Two ways of scoring, on purpose. The per-epoch validation (:func:`predict_items`, the ``val_*``
columns of the log and of the card's ``training_log``, which choose the kept epoch) runs the
heads on the cached levels. It is the one place in training that does not score through
:class:`~bpclip_core.running.engine.QualityEngine`: the engine scores images, so it would run
the backbone over every validation image at every epoch, the pass the cache exists to avoid. The
rebuild's images are at the model's image size, which the engine's ``resize`` protocol leaves as
it is, and the cache holds the levels of the same frozen (BatchNorm-folded) backbone: the two
see the same pixels through the same backbone and differ by the float16 storage of the levels.
Every figure that describes the finished model (the held-out figures of the model card,
``benchmarks/``: :mod:`.synthetic_eval`) is made by the engine from the image files, as users'
scores are.

Deterministic for a seed on one device and thread count; a killed run resumes from its last
finished epoch (``state.pt``, read with ``weights_only=True``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bpclip_core.model.bpclip import BPCLIP
from bpclip_core.training.losses import adjective_loss, adjective_targets, quality_loss, ranking_loss
from bpclip_core.training.trainer import _atomic_torch_save

STATE_NAME = "state.pt"
BEST_NAME = "best.pt"  # the weights of the best validation epoch


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class FeatureCache:
    """F_1..F_5 of a list of equally sized images: one (N, C_i, H_i, W_i) float16 ``.npy`` per level.

    Built by :meth:`build` (which resumes an interrupted build), opened memory-mapped, so two
    processes (e.g. the NR and the FR run) share one copy in the page cache.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / "manifest.json").read_text())
        if self.manifest["done"] != len(self.manifest["images"]):
            raise RuntimeError(f"{self.folder}: feature cache incomplete ({self.manifest['done']} images)")
        self.levels = [np.load(self.folder / f"level{i}.npy", mmap_mode="r") for i in range(5)]
        self.index = {name: i for i, name in enumerate(self.manifest["images"])}

    def __len__(self) -> int:
        return len(self.manifest["images"])

    def batch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """The five levels of ``indices`` as float32 channels_last tensors."""
        rows = np.asarray(indices)
        return [
            torch.from_numpy(level[rows]).float().contiguous(memory_format=torch.channels_last) for level in self.levels
        ]

    @classmethod
    def build(
        cls,
        backbone: nn.Module,
        root: Path,
        images: Sequence[str],
        folder: Path,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        progress: Callable[[int, int], None] | None = None,
    ) -> FeatureCache:
        """Compute and store the levels of ``images`` (paths relative to ``root``), or open the
        finished cache; a cache of another image list or backbone is refused, never reused."""
        from bpclip_core.inputs.decoding import load_image

        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        identity = {"images": list(images), "backbone": _backbone_digest(backbone)}
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            if {k: manifest.get(k) for k in identity} != identity:
                raise SystemExit(f"{folder} holds the features of other images or another backbone: move it aside")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            first = load_image(Path(root) / images[0])[None]
            with torch.inference_mode():
                shapes = [tuple(level.shape[1:]) for level in backbone.eval()(first.to(device))]
            for i, shape in enumerate(shapes):
                np.lib.format.open_memmap(folder / f"level{i}.npy", "w+", np.float16, (len(images), *shape)).flush()
            manifest = {**identity, "shapes": shapes, "done": 0}
            _write_json(manifest_path, manifest)
        arrays = [np.load(folder / f"level{i}.npy", mmap_mode="r+") for i in range(5)]
        backbone = backbone.eval().to(device)
        for start in range(manifest["done"], len(images), batch_size):
            names = images[start : start + batch_size]
            batch = torch.stack([load_image(Path(root) / name) for name in names]).to(device)
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                levels = backbone(batch)
            for array, level in zip(arrays, levels):
                array[start : start + len(names)] = level.float().cpu().numpy().astype(np.float16)
            for array in arrays:
                array.flush()
            manifest["done"] = start + len(names)
            _write_json(manifest_path, manifest)  # after the data: a kill redoes at most one batch
            if progress is not None:
                progress(manifest["done"], len(images))
        del arrays
        return cls(folder)


def _backbone_digest(backbone: nn.Module) -> str:
    """A short fingerprint of a backbone's weights (a cache is only valid for the same ones)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


@dataclass(frozen=True)
class Item:
    """One training or validation item: cache rows of the image (and its reference, FR), the
    normalised quality target, the distortion type (explanation targets) and its picture (ranking)."""

    image: int
    reference: int | None
    target: float
    distortion: str
    group: int


@dataclass(frozen=True)
class HeadRecipe:
    """The optimisation of the heads (AdamW, one cosine over all epochs, linear warm-up)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    adjective_loss_weight: float = 0.1
    ranking_loss_weight: float = 1.0
    group_size: int = 4  # versions of one picture placed together in a batch (the ranking loss)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def epoch_batches(items: Sequence[Item], recipe: HeadRecipe, epoch: int) -> list[list[int]]:
    """Batches of item indices for ``epoch``: each picture's items shuffled and cut into runs of
    ``group_size`` (so the ranking loss has pairs), the runs shuffled and packed into batches."""
    rng = np.random.default_rng([recipe.seed, epoch])
    by_group: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_group[item.group].append(index)
    runs = []
    for group in sorted(by_group):
        members = [by_group[group][i] for i in rng.permutation(len(by_group[group]))]
        runs += [members[i : i + recipe.group_size] for i in range(0, len(members), recipe.group_size)]
    order = [index for run_index in rng.permutation(len(runs)) for index in runs[run_index]]
    return [order[i : i + recipe.batch_size] for i in range(0, len(order), recipe.batch_size)]


def _forward(model: BPCLIP, cache: FeatureCache, items: Sequence[Item]):
    levels = cache.batch([item.image for item in items])
    references = None
    if model.mode == "fr":
        references = cache.batch([item.reference for item in items])  # type: ignore[misc]
    return model.from_levels(levels, references)


def predict_items(model: BPCLIP, cache: FeatureCache, items: Sequence[Item], batch_size: int = 64) -> np.ndarray:
    """Scores of ``items`` from the cached levels (per-epoch validation; the module docstring says why
    it is not the engine; the figures of the finished model are the engine's)."""
    model.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            scores.append(_forward(model, cache, items[start : start + batch_size]).score.float().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


def validation_figures(scores: np.ndarray, items: Sequence[Item], levels: Sequence[int]) -> dict[str, float]:
    """SRCC against the targets and the mean within-series monotonicity (picture x type, pristine as level 0)."""
    from scipy import stats

    series: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
    pristine: dict[int, float] = {}
    for item, level, score in zip(items, levels, scores):
        if level == 0:
            pristine[item.group] = float(score)
        else:
            series[(item.group, item.distortion)].append((level, float(score)))
    rhos = []
    for (group, _), points in series.items():
        points = [(0, pristine[group]), *points] if group in pristine else points
        levels_, values = zip(*points)
        if len(set(levels_)) > 1:
            rhos.append(-stats.spearmanr(levels_, values)[0] if np.ptp(values) > 0 else 0.0)
    srcc = stats.spearmanr(scores, [item.target for item in items])[0]
    return {"srcc": float(srcc), "monotonicity": float(np.mean(rhos)) if rhos else float("nan")}


def head_parameters(model: BPCLIP, weight_decay: float) -> list[dict[str, Any]]:
    """Every trainable tensor but the backbone's; no weight decay on biases, norms, anchors, encodings."""
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        if name.startswith("backbone.") or not parameter.requires_grad:
            continue
        (plain if parameter.ndim <= 1 or "positional" in name or "text_embeddings" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def train_heads(
    model: BPCLIP,
    cache: FeatureCache,
    train_items: Sequence[Item],
    run_dir: Path,
    recipe: HeadRecipe,
    validation: tuple[Sequence[Item], Sequence[int]] | None = None,
    stop_after_epochs: int | None = None,
) -> list[dict[str, float]]:
    """Train ``model``'s heads in place on the cached levels; resumes from ``run_dir/state.pt``.

    ``stop_after_epochs`` ends this call after that many epochs of the recipe (e.g. a time-bounded
    job); calling again with the same recipe continues it.

    Returns the per-epoch log (also written to ``run_dir/log.json``): losses and, with
    ``validation`` (items and their distortion levels), validation SRCC and monotonicity; the
    model then ends with the weights of the best validation epoch (:func:`kept_epoch`), else
    with those of the last epoch.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.backbone.requires_grad_(False)
    groups = head_parameters(model, recipe.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=recipe.lr)
    steps_per_epoch = math.ceil(len(train_items) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch

    def rate(step: int) -> float:  # linear warm-up, then one cosine to zero
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        return 0.5 * (
            1 + math.cos(math.pi * min(1.0, (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps)))
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    history: list[dict[str, float]] = []
    start_epoch = 0
    state_path = run_dir / STATE_NAME
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["recipe"] != recipe.to_dict():
            raise SystemExit(f"{run_dir} holds a run of another recipe: move it aside or use another folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch = json.loads(state["history"]), int(state["epoch"])
        _log(f"resumed {run_dir} after epoch {start_epoch}")
    adjectives = model.card.adjectives
    last_epoch = recipe.epochs if stop_after_epochs is None else min(recipe.epochs, stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        model.train()
        totals = defaultdict(float)
        batches = epoch_batches(train_items, recipe, epoch)
        for batch_indices in batches:
            batch = [train_items[i] for i in batch_indices]
            output = _forward(model, cache, batch)
            target = torch.tensor([item.target for item in batch], dtype=torch.float32)
            terms = {"quality": quality_loss(output.score.float(), target)}  # eq. 10
            if recipe.adjective_loss_weight:
                targets, mask = adjective_targets([item.distortion for item in batch], target, adjectives)
                terms["explanation"] = adjective_loss(output.level_probabilities, targets, mask)
            if recipe.ranking_loss_weight:
                group = torch.tensor([item.group for item in batch])
                terms["ranking"] = ranking_loss(output.score.float(), target, group)
            weights = {
                "quality": 1.0,
                "explanation": recipe.adjective_loss_weight,
                "ranking": recipe.ranking_loss_weight,
            }
            loss = sum(weights[name] * value for name, value in terms.items())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}; the last good epoch is in {state_path}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 5.0)
            optimizer.step()
            scheduler.step()
            for name, value in terms.items():
                totals[name] += value.item() / len(batches)
            totals["loss"] += loss.item() / len(batches)
        row = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in totals.items()}}
        if validation is not None:
            items, levels = validation
            row.update(
                {
                    f"val_{k}": round(v, 4)
                    for k, v in validation_figures(predict_items(model, cache, items), items, levels).items()
                }
            )
        history.append(row)
        _log(f"[{run_dir.name}] {json.dumps(row)}")
        if validation is not None and validation_score(row) > max(map(validation_score, history[:-1]), default=-2):
            _atomic_torch_save(model.state_dict(), run_dir / BEST_NAME)  # before state.pt: a resumed run never loses it
        payload = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "history": json.dumps(history), "epoch": epoch + 1, "recipe": recipe.to_dict(),
        }  # fmt: skip
        _atomic_torch_save(payload, state_path)
        (run_dir / "log.json").write_text(json.dumps(history, indent=1))
    if validation is not None and (run_dir / BEST_NAME).is_file() and last_epoch == recipe.epochs:
        model.load_state_dict(torch.load(run_dir / BEST_NAME, map_location="cpu", weights_only=True))
    model.eval()
    return history


def validation_score(row: dict[str, float]) -> float:
    """How an epoch is ranked for keeping: the mean of its validation SRCC and monotonicity."""
    return (row["val_srcc"] + row["val_monotonicity"]) / 2


def kept_epoch(history: Sequence[dict[str, float]]) -> int | None:
    """The epoch whose weights :func:`train_heads` keeps (None without validation)."""
    if not history or "val_srcc" not in history[0]:
        return None
    return int(max(history, key=validation_score)["epoch"])  # the first of equals, as train_heads keeps it
