"""Foreground IoU / Dice as a Detectron2 DatasetEvaluator, for SemanticUNet's outputs."""
import logging
from collections import OrderedDict

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from .metrics import ForegroundScores

logger = logging.getLogger(__name__)


class ForegroundEvaluator(DatasetEvaluator):
    """Compares each output "sem_seg" probability with the input's "sem_seg" mask, and logs
    every definition of sharp_fpn.unet.metrics as a metric | value table, headed by the
    model's readout (which heads, which pruning level)."""

    def __init__(self, threshold: float = 0.5):
        self.scores = ForegroundScores(threshold)
        self.reset()

    def reset(self):
        self.scores.reset()
        self.readouts = set()

    def process(self, inputs, outputs):
        for item, output in zip(inputs, outputs):
            self.scores.update(output["sem_seg"][None].cpu(), item["sem_seg"][None])
            self.readouts.add(output.get("readout", "unknown readout"))

    def evaluate(self):
        parts = comm.gather((self.scores, self.readouts), dst=0)
        if not comm.is_main_process():
            return {}
        merged = ForegroundScores(self.scores.threshold, self.scores.batch_size)
        readouts = set()
        for scores, part_readouts in parts:
            merged.merge(scores)
            readouts |= part_readouts
        summary = merged.summary()
        if not summary:
            logger.warning("ForegroundEvaluator received no predictions")
            return {}
        logger.info(
            "UNet foreground scores, %s; fractions, binary at probability >= %g except soft_dice "
            "(definitions: sharp_fpn/unet/metrics.py)\n%s",
            "; ".join(sorted(readouts)),
            merged.threshold,
            format_table(summary),
        )
        return OrderedDict(foreground=summary)


def format_table(summary) -> str:
    """A two-column markdown table, metric | value (counts as integers, scores to 4 places)."""
    rows = [(name, f"{value:.0f}" if name == "images" else f"{value:.4f}") for name, value in summary.items()]
    return tabulate(
        rows, headers=["metric", "value"], tablefmt="pipe", colalign=("left", "right"), disable_numparse=True
    )
