"""FiftyOne without the App (notebook style): score a dataset, look at the worst images, tag.

.venv/bin/bpclip init-checkpoint --config tiny --mode nr --random --out tiny-nr.safetensors
.venv/bin/python examples/fiftyone_notebook.py tiny-nr.safetensors
"""

# %% a dataset of the example images
import sys
from pathlib import Path

import fiftyone as fo
from fiftyone import ViewField as F

from bpclip_plugins.fiftyone import (
    QualityTagging,
    compute_quality,
    delete_quality_run,
    get_quality_run,
    list_quality_runs,
)

images = Path(__file__).parent / "images"
dataset = fo.Dataset.from_images_dir(str(images), name="bpclip-example", overwrite=True)

# %% score, store the three dominant adjectives, tag quality terciles and the top adjective
summary = compute_quality(
    dataset,
    checkpoint=sys.argv[1] if len(sys.argv) > 1 else None,  # or zero_shot=True
    tagging=QualityTagging(bands="quantiles", cut_points=(1 / 3, 2 / 3)),
    progress=True,
)
print(summary)

# %% sort, filter and inspect
worst = dataset.sort_by("bpclip_score").limit(3)
for sample in worst:
    print(Path(sample.filepath).name, round(sample.bpclip_score, 3), sample.bpclip_adjectives, sample.tags)
print(dataset.match(F("bpclip_score") > 0.5).count(), "samples above 0.5")
print(dataset.count_sample_tags())

# %% the run is recorded on the dataset, like a brain run
print(list_quality_runs(dataset), get_quality_run(dataset, "bpclip_score")["summary"])
delete_quality_run(dataset, "bpclip_score")  # removes its fields and tags too
# session = fo.launch_app(dataset)  # then run "BPCLIP: compute image quality" from the operator browser
