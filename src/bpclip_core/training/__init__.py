"""Training and evaluation: the paper's recipe, resumable and distributed, with metrics and reports.

Heavy modules (scipy, matplotlib, tensorboard) are imported only where used.
"""

from bpclip_core.training.config import TrainConfig
from bpclip_core.training.evaluation import evaluate_checkpoint, quality_metrics, summarise
from bpclip_core.training.trainer import Trainer, TrainingError, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "evaluate_checkpoint",
    "quality_metrics",
    "summarise",
    "train",
]
