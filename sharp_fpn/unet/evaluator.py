"""Foreground IoU / Dice as a Detectron2 DatasetEvaluator, for SemanticUNet's outputs."""
from collections import OrderedDict

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .metrics import ForegroundScores


class ForegroundEvaluator(DatasetEvaluator):
    """Compares each output "sem_seg" probability with the input's "sem_seg" mask."""

    def __init__(self, threshold: float = 0.5):
        self.scores = ForegroundScores(threshold)

    def reset(self):
        self.scores.reset()

    def process(self, inputs, outputs):
        for item, output in zip(inputs, outputs):
            self.scores.update(output["sem_seg"][None].cpu(), item["sem_seg"][None])

    def evaluate(self):
        parts = comm.gather(self.scores, dst=0)
        if not comm.is_main_process():
            return {}
        merged = ForegroundScores(self.scores.threshold)
        for part in parts:
            merged.merge(part)
        return OrderedDict(foreground=merged.summary())
