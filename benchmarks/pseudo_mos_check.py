"""Does the calibrated pseudo-MOS beat the plain level as a label? Checked on held-out references.

For every held-out reference of the default-model content (never used to calibrate the
table), every realistic type and level, compare two labels with FR measures of that very
image pair, pooled across types (the point of a label comparable across types):

* the calibrated table (bpclip_core/data/pseudo_mos.py), and
* the plain ``5 - 0.8 * level``.

Measures: GMSD (independent: never used to make the table), and the table's own per-image
measure D (whether the per-type means generalise to unseen pictures). Prints Spearman
correlations of each label with minus each measure, overall and within each harmed dimension.

    .venv/bin/python benchmarks/pseudo_mos_check.py [--work data/default-models] [--every 2]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from bpclip_core.data.pseudo_mos import PseudoMOSTable, distortion_measure, gmsd
from bpclip_core.data.synthetic import HARMS, LEVELS, REALISTIC, distort, pseudo_mos
from bpclip_core.inputs.decoding import find_images, load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("data/default-models"))
    parser.add_argument("--every", type=int, default=1, help="use every n-th held-out reference")
    args = parser.parse_args()
    table = PseudoMOSTable.load(args.work / "pseudo_mos.json")
    references = find_images([args.work / "content" / "heldout"])[:: args.every]
    rows = []
    for index, path in enumerate(references):
        reference = load_image(path).permute(1, 2, 0).numpy()
        for name in REALISTIC:
            for level in range(1, LEVELS + 1):
                distorted = distort(reference, name, level, seed=index)
                rows.append(
                    (name, table(name, level), pseudo_mos(level), -gmsd(reference, distorted),
                     -distortion_measure(reference, distorted))
                )  # fmt: skip
    names, calibrated, plain, neg_gmsd, neg_measure = (np.array(c) for c in zip(*rows))
    print(f"{len(references)} held-out references x {len(REALISTIC)} types x {LEVELS} levels = {len(rows)} pairs")
    print(f"{'subset':22s} {'measure':8s} {'calibrated':>10s} {'plain level':>11s}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[HARMS[name][0]].append(i)
    for subset, index in [("all types", list(range(len(rows)))), *sorted(groups.items())]:
        for measure_name, measure in (("GMSD", neg_gmsd), ("D", neg_measure)):
            a = stats.spearmanr(calibrated[index], measure[index])[0]
            b = stats.spearmanr(plain[index], measure[index])[0]
            print(f"{subset:22s} {measure_name:8s} {a:10.3f} {b:11.3f}")


if __name__ == "__main__":
    main()
