"""Readers for the IQA datasets of the paper, in the layouts in which each is distributed.

Each reader takes the folder the archive was unpacked into, documents the files it
expects, and raises :class:`DatasetError` naming the first missing or malformed one.
``read_dataset(kind, root)`` picks a reader by name (``DATASET_READERS``).

Score direction: LIVE and CSIQ give DMOS (lower is better); every other dataset gives MOS
(higher is better). The resulting :class:`~bpclip_core.model.config.ScoreScale` spans the
dataset's own MOS range and records the direction.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bpclip_core.data.records import DatasetError, QualityDataset, QualityItem, build_dataset, parse_mos

# ---------------------------------------------------------------------------- helpers


def _require(path: Path, dataset: str, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{dataset}: missing {what}: {path} does not exist (is the dataset root right?)")
    return path


def _read_csv_rows(path: Path, dataset: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a headed CSV file, checking that the ``required`` columns exist."""
    _require(path, dataset, "annotation file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{dataset}: cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{dataset}: {path.name} has no column(s) {missing}; found columns {header}")
    return rows


def _read_table(path_stem: Path, dataset: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    """An .xlsx annotation sheet, or its CSV export (same stem, ``.csv``) when openpyxl is missing."""
    xlsx, csv_export = path_stem.with_suffix(".xlsx"), path_stem.with_suffix(".csv")
    if csv_export.is_file():
        return _read_csv_rows(csv_export, dataset, required)
    if xlsx.is_file():
        try:
            import pandas as pd

            frame = pd.read_excel(xlsx, sheet_name=0, dtype=str)
        except ImportError as exc:
            raise DatasetError(
                f"{dataset}: reading {xlsx.name} needs openpyxl (pip install openpyxl); "
                f"or export the sheet to {csv_export.name} next to it"
            ) from exc
        except Exception as exc:
            raise DatasetError(f"{dataset}: cannot read {xlsx}: {exc}") from exc
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise DatasetError(f"{dataset}: {xlsx.name} has no column(s) {missing}; found {list(frame.columns)}")
        return [{k: ("" if v is None else str(v)).strip() for k, v in row.items()} for row in frame.to_dict("records")]
    raise DatasetError(f"{dataset}: missing annotation file: neither {xlsx} nor its CSV export {csv_export} exists")


def _load_mat(path: Path, dataset: str, variable: str) -> Any:
    from scipy.io import loadmat

    _require(path, dataset, "annotation file")
    try:
        content = loadmat(str(path))
    except Exception as exc:
        raise DatasetError(f"{dataset}: cannot read {path} as a MATLAB file: {exc}") from exc
    if variable not in content:
        found = [k for k in content if not k.startswith("__")]
        raise DatasetError(f"{dataset}: {path.name} has no variable {variable!r}; found {found}")
    return content[variable]


def _mat_strings(array: Any) -> list[str]:
    """A MATLAB cell array of strings (as loaded by scipy) as a flat list of str."""
    import numpy as np

    out: list[str] = []
    for cell in np.asarray(array, dtype=object).ravel():
        value = cell
        while isinstance(value, np.ndarray):
            value = value.ravel()[0] if value.size else ""
        out.append(str(value).strip())
    return out


def _mat_numbers(array: Any, dataset: str, where: str) -> list[float]:
    import numpy as np

    try:
        return [float(v) for v in np.asarray(array, dtype=float).ravel()]
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{dataset}: {where} holds values that are not numbers: {exc}") from exc


def _case_insensitive_index(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- generic formats


def read_csv_dataset(
    csv_path: str | Path, name: str | None = None, higher_is_better: bool = True, image_root: str | Path | None = None
) -> QualityDataset:
    """The generic CSV layout: a header with ``image,mos`` and optionally ``ref``.

    Paths are relative to ``image_root`` (default: the CSV file's folder). A ``distortion``
    column (``bpclip synthesize``) is kept on each item; other columns are ignored. Rows with a ``ref``
    form an FR dataset; the content group of a row is its reference (or its image).
    """
    path = Path(csv_path)
    dataset = name or path.stem
    rows = _read_csv_rows(path, dataset, ("image", "mos"))
    root = Path(image_root) if image_root else path.parent
    items = []
    for line, row in enumerate(rows, start=2):
        if not row.get("image"):
            raise DatasetError(f"{dataset}: {path.name} line {line}: empty image name")
        ref = row.get("ref") or None
        items.append(
            QualityItem(
                image=root / row["image"],
                mos=parse_mos(row["mos"], f"{dataset}: {path.name} line {line}"),
                reference=root / ref if ref else None,
                content=ref or row["image"],
                distortion=(row.get("distortion") or "").strip(),
            )
        )
    return build_dataset(dataset, items, root, higher_is_better, source=path.name)


def read_pyiqa_meta_info(
    csv_path: str | Path,
    image_root: str | Path,
    reference_root: str | Path | None = None,
    name: str | None = None,
    higher_is_better: bool = True,
) -> QualityDataset:
    """pyiqa's meta-info CSV (``meta_info_*Dataset.csv``), read by column position as pyiqa does.

    NR files: ``name, mos[, ...]``. FR files (first header cell contains ``ref``):
    ``ref_name, dist_name, mos[, ...]``. Distorted images live in ``image_root``,
    references in ``reference_root`` (default: ``image_root``).
    """
    path = Path(csv_path)
    dataset = name or path.stem.removeprefix("meta_info_").removesuffix("Dataset")
    _require(path, dataset, "meta-info file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise DatasetError(f"{dataset}: {path.name} has a header but no rows")
    header = [h.strip().lower() for h in rows[0]]
    full_reference = "ref" in header[0]
    needed = 3 if full_reference else 2
    images, refs = Path(image_root), Path(reference_root or image_root)
    items = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < needed:
            raise DatasetError(f"{dataset}: {path.name} line {line}: expected at least {needed} columns, got {row}")
        where = f"{dataset}: {path.name} line {line}"
        if full_reference:
            ref, dist = row[0].strip(), row[1].strip()
            items.append(QualityItem(images / dist, parse_mos(row[2], where), refs / ref, ref))
        else:
            items.append(QualityItem(images / row[0].strip(), parse_mos(row[1], where), None, row[0].strip()))
    return build_dataset(dataset, items, images, higher_is_better, source=path.name)


# ---------------------------------------------------------------------------- FR datasets

LIVE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("jp2k", 227),
    ("jpeg", 233),
    ("wn", 174),
    ("gblur", 174),
    ("fastfading", 174),
)


def read_live(root: str | Path) -> QualityDataset:
    """LIVE Release 2: ``dmos.mat`` (``dmos``, ``orgs``), ``refnames_all.mat`` (``refnames_all``),
    ``refimgs/`` and the folders ``jp2k jpeg wn gblur fastfading`` of ``img<k>.bmp``.

    The 982 DMOS entries run through the folders in that order; a folder holds as many
    images as its ``info.txt`` has lines (the official counts 227/233/174/174/174 without
    it). Entries with ``orgs == 1`` are the references themselves and are skipped, which
    leaves the 779 distorted images. DMOS: lower is better.
    """
    root = Path(root)
    dmos = _mat_numbers(_load_mat(root / "dmos.mat", "LIVE", "dmos"), "LIVE", "dmos.mat:dmos")
    orgs = _mat_numbers(_load_mat(root / "dmos.mat", "LIVE", "orgs"), "LIVE", "dmos.mat:orgs")
    refnames = _mat_strings(_load_mat(root / "refnames_all.mat", "LIVE", "refnames_all"))
    folders = []
    for folder, official_count in LIVE_FOLDERS:
        _require(root / folder, "LIVE", f"distortion folder '{folder}'")
        info = root / folder / "info.txt"
        count = sum(1 for line in info.read_text().splitlines() if line.strip()) if info.is_file() else official_count
        folders.extend((folder, k + 1) for k in range(count))
    if not len(dmos) == len(orgs) == len(refnames) == len(folders):
        raise DatasetError(
            f"LIVE: dmos ({len(dmos)}), orgs ({len(orgs)}), refnames_all ({len(refnames)}) and the images "
            f"listed by the folders' info.txt ({len(folders)}) must have the same length"
        )
    items = [
        QualityItem(root / folder / f"img{k}.bmp", score, root / "refimgs" / ref, ref)
        for (folder, k), score, original, ref in zip(folders, dmos, orgs, refnames)
        if not original
    ]
    return build_dataset("LIVE", items, root, higher_is_better=False, source="dmos.mat")


CSIQ_TYPES: dict[str, str] = {
    "noise": "awgn",
    "awgn": "awgn",
    "jpeg": "jpeg",
    "jpeg 2000": "jpeg2000",
    "jpeg2000": "jpeg2000",
    "f noise": "fnoise",
    "fnoise": "fnoise",
    "blur": "blur",
    "contrast": "contrast",
}


def read_csiq(root: str | Path) -> QualityDataset:
    """CSIQ: ``src_imgs/<ref>.png``, ``dst_imgs/<type>/<ref>.<TYPE>.<level>.png`` and the
    sheet ``csiq.DMOS.xlsx`` (columns ``image, dst_type, dst_lev, dmos``) or its CSV export
    ``csiq.DMOS.csv`` (used when openpyxl is not installed). DMOS: lower is better.
    """
    root = Path(root)
    rows = _read_table(root / "csiq.DMOS.xlsx", "CSIQ", ("image", "dst_type", "dst_lev", "dmos"))
    distorted = _case_insensitive_index(_require(root / "dst_imgs", "CSIQ", "folder dst_imgs/"))
    _require(root / "src_imgs", "CSIQ", "folder src_imgs/")
    items = []
    for line, row in enumerate(rows, start=2):
        kind = CSIQ_TYPES.get(row["dst_type"].lower())
        if kind is None:
            raise DatasetError(f"CSIQ: line {line}: unknown dst_type {row['dst_type']!r}")
        ref = row["image"].removesuffix(".0")
        level = row["dst_lev"].removesuffix(".0")
        file_name = f"{ref}.{kind}.{level}.png".lower()
        image = distorted.get(file_name, root / "dst_imgs" / kind / file_name)
        mos = parse_mos(row["dmos"], f"CSIQ: line {line}")
        items.append(QualityItem(image, mos, root / "src_imgs" / f"{ref}.png", ref))
    return build_dataset("CSIQ", items, root, higher_is_better=False, source="csiq.DMOS")


def read_tid2013(root: str | Path) -> QualityDataset:
    """TID2013: ``mos_with_names.txt`` (lines ``<mos> <name>``), ``distorted_images/iXX_YY_Z.bmp``
    and ``reference_images/IXX.BMP`` (matched case-insensitively). MOS: higher is better."""
    root = Path(root)
    annotations = _require(root / "mos_with_names.txt", "TID2013", "annotation file")
    distorted = _case_insensitive_index(_require(root / "distorted_images", "TID2013", "folder distorted_images/"))
    references = _case_insensitive_index(_require(root / "reference_images", "TID2013", "folder reference_images/"))
    items = []
    for line, text in enumerate(annotations.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        parts = text.split()
        if len(parts) != 2:
            raise DatasetError(f"TID2013: mos_with_names.txt line {line}: expected '<mos> <image name>', got {text!r}")
        mos = parse_mos(parts[0], f"TID2013: mos_with_names.txt line {line}")
        name = parts[1]
        ref_id = name.split("_")[0].lower()
        ref = references.get(f"{ref_id}.bmp", root / "reference_images" / f"{ref_id.upper()}.BMP")
        items.append(QualityItem(distorted.get(name.lower(), root / "distorted_images" / name), mos, ref, ref_id))
    return build_dataset("TID2013", items, root, source="mos_with_names.txt")


def read_kadid10k(root: str | Path) -> QualityDataset:
    """KADID-10k: ``dmos.csv`` (``dist_img, ref_img, dmos, var``) and ``images/`` holding
    both distorted and reference images. Its "dmos" is a MOS in [1, 5]: higher is better."""
    root = Path(root)
    rows = _read_csv_rows(root / "dmos.csv", "KADID-10k", ("dist_img", "ref_img", "dmos"))
    images = root / "images"
    items = [
        QualityItem(
            images / row["dist_img"],
            parse_mos(row["dmos"], f"KADID-10k: dmos.csv line {line}"),
            images / row["ref_img"],
            row["ref_img"],
        )
        for line, row in enumerate(rows, start=2)
    ]
    return build_dataset("KADID-10k", items, root, source="dmos.csv")


# ---------------------------------------------------------------------------- NR datasets


def read_clive(root: str | Path) -> QualityDataset:
    """LIVE In the Wild (CLIVE): ``ChallengeDB_release/`` with ``Data/AllImages_release.mat``,
    ``Data/AllMOS_release.mat`` and ``Images/``. ``root`` may be that folder or its parent.
    With the full 1169 entries the first 7 (the training images) are dropped, leaving 1162."""
    root = Path(root)
    if (root / "ChallengeDB_release").is_dir():
        root = root / "ChallengeDB_release"
    names = _mat_strings(_load_mat(root / "Data" / "AllImages_release.mat", "CLIVE", "AllImages_release"))
    mos = _mat_numbers(
        _load_mat(root / "Data" / "AllMOS_release.mat", "CLIVE", "AllMOS_release"), "CLIVE", "AllMOS_release"
    )
    if len(names) != len(mos):
        raise DatasetError(f"CLIVE: {len(names)} image names but {len(mos)} MOS values")
    start = 7 if len(names) == 1169 else 0
    images = _require(root / "Images", "CLIVE", "folder Images/")
    items = [QualityItem(images / n, m, None, n) for n, m in zip(names[start:], mos[start:])]
    return build_dataset("CLIVE", items, root, source="AllMOS_release.mat")


KONIQ_SHORT_SIDE = 384  # Table I: KonIQ-10k at 512x384


def read_koniq10k(root: str | Path, cache_dir: str | Path | None = None) -> QualityDataset:
    """KonIQ-10k: ``koniq10k_scores_and_distributions.csv`` (``image_name, MOS``) and the
    512x384 release (``512x384/``, the resolution of Table I).

    Without ``512x384/``, the 1024x768 release (``1024x768/``) is resized to 512x384 once and
    cached as PNG under ``cache_dir`` (default ``<root>/.bpclip-cache/short384``), as SPAQ
    is: a 384x384 training crop then sees the whole height of the picture at the paper's
    scale, and training, evaluation and scoring see one scale. The official split is read
    by :func:`koniq_official_split`.
    """
    root = Path(root)
    rows = _read_csv_rows(root / "koniq10k_scores_and_distributions.csv", "KonIQ-10k", ("image_name", "MOS"))
    small = root / "512x384"
    images = small if small.is_dir() else _require(root / "1024x768", "KonIQ-10k", "folder 512x384/ or 1024x768/")
    items = [
        QualityItem(images / r["image_name"], parse_mos(r["MOS"], f"KonIQ-10k: line {i}"), None, r["image_name"])
        for i, r in enumerate(rows, start=2)
    ]
    dataset = build_dataset("KonIQ-10k", items, root, source="koniq10k_scores_and_distributions.csv")
    if images is small:
        return dataset
    cache = Path(cache_dir) if cache_dir else root / ".bpclip-cache" / f"short{KONIQ_SHORT_SIDE}"
    dataset.items = [
        QualityItem(cached_resize(item.image, cache, KONIQ_SHORT_SIDE), item.mos, None, item.content)
        for item in dataset.items
    ]
    return dataset


def koniq_official_split(root: str | Path) -> dict[str, list[str]]:
    """KonIQ-10k's official split: image names per set from the ``set`` column of
    ``koniq10k_distributions_sets.csv`` (``training``/``validation``/``test``)."""
    path = Path(root) / "koniq10k_distributions_sets.csv"
    rows = _read_csv_rows(path, "KonIQ-10k", ("image_name", "set"))
    sets: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    aliases = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}
    for line, row in enumerate(rows, start=2):
        part = aliases.get(row["set"].lower())
        if part is None:
            raise DatasetError(f"KonIQ-10k: {path.name} line {line}: unknown set {row['set']!r}")
        sets[part].append(row["image_name"])
    return sets


SPAQ_SHORT_SIDE = 448


def read_spaq(
    root: str | Path, cache_dir: str | Path | None = None, short_side: int = SPAQ_SHORT_SIDE
) -> QualityDataset:
    """SPAQ: ``Annotations/MOS and Image attribute scores.xlsx`` (or its CSV export, same
    name with ``.csv``; columns ``Image name, MOS``) and ``TestImage/``.

    As in the paper the photos are resized so the short side is 448 px; resized copies
    are cached as PNG under ``cache_dir`` (default ``<root>/.bpclip-cache/short<448>``) and
    the dataset points at them, so later runs read small files.
    """
    root = Path(root)
    rows = _read_table(root / "Annotations" / "MOS and Image attribute scores.xlsx", "SPAQ", ("Image name", "MOS"))
    images = _require(root / "TestImage", "SPAQ", "folder TestImage/")
    items = [
        QualityItem(images / r["Image name"], parse_mos(r["MOS"], f"SPAQ: line {i}"), None, r["Image name"])
        for i, r in enumerate(rows, start=2)
    ]
    dataset = build_dataset("SPAQ", items, root, source="MOS and Image attribute scores")
    cache = Path(cache_dir) if cache_dir else root / ".bpclip-cache" / f"short{short_side}"
    dataset.items = [
        QualityItem(cached_resize(item.image, cache, short_side), item.mos, None, item.content)
        for item in dataset.items
    ]
    return dataset


def cached_resize(image: Path, cache: Path, short_side: int) -> Path:
    """``image`` resized so its short side is ``short_side`` (PNG in ``cache``), made once."""
    from PIL import Image

    target = cache / f"{image.stem}.png"
    if target.is_file() and target.stat().st_mtime >= image.stat().st_mtime:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with Image.open(image) as opened:
        if min(opened.size) >= 4 * short_side:  # JPEG: decode at half size, still >= 2x the target
            opened.draft("RGB", (opened.size[0] // 2, opened.size[1] // 2))
        picture = opened.convert("RGB")
        scale = short_side / min(picture.size)
        size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
        partial = target.with_name(f".{target.name}.partial.png")
        picture.resize(size, Image.Resampling.BICUBIC).save(partial)
    partial.replace(target)
    return target


# ---------------------------------------------------------------------------- registry

DATASET_READERS: dict[str, Callable[..., QualityDataset]] = {
    "live": read_live,
    "csiq": read_csiq,
    "tid2013": read_tid2013,
    "kadid10k": read_kadid10k,
    "clive": read_clive,
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "csv": read_csv_dataset,
    "pyiqa": read_pyiqa_meta_info,
}


def read_dataset(kind: str, root: str | Path, **options: Any) -> QualityDataset:
    """Read a dataset by kind (a key of ``DATASET_READERS``; ``-`` and ``_`` are ignored).

    For ``csv`` and ``pyiqa`` ``root`` is the CSV file; otherwise the unpacked dataset folder.
    """
    key = kind.lower().replace("-", "").replace("_", "")
    if key not in DATASET_READERS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {sorted(DATASET_READERS)}")
    return DATASET_READERS[key](root, **options)
