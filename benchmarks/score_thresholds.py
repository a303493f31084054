#!/usr/bin/env python
"""The hard metrics of one trained model at several score thresholds, from one inference pass.

    python benchmarks/score_thresholds.py RUN_DIR --val-json ann/val.json --image-root STAGE_DIR \
        --thresholds 0.3 0.4 0.5 0.6 0.7 [--opts KEY VALUE ...]

``--opts`` overrides the run's config, as in tools/predict.py: ``TEST.AUG.ENABLED True`` for
test-time flips (:mod:`sharp_fpn.modeling.tta`). RUN_DIR holds ``config.yaml`` and
``model_final.pth``. COCO AP does not depend on the threshold: it ranks every detection the
model keeps (its SCORE_THRESH_TEST, 0.05 in the shipped configs, so the AP is the run's own). The
DSB score, F1 and foreground IoU/Dice count only detections at or above the threshold, so the
threshold is a lever of its own (NucleiEvaluator's ``score_thresh``).
"""
import argparse
from pathlib import Path

import torch
from detectron2.utils.logger import setup_logger

import common
from sharp_fpn import get_sharp_cfg
from sharp_fpn.engine import Trainer, load_model_for_eval, register_json_datasets, set_cpu_threads
from sharp_fpn.modeling.tta import with_test_time_flips

COLUMNS = ("dsb_score", "f1@0.5", "fg_iou", "fg_dice")  # then segm AP, the same in every row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a training output folder (config.yaml, model_final.pth)")
    p.add_argument("--val-json", required=True, help="converted COCO JSON to evaluate on")
    p.add_argument("--image-root", required=True, help="the folder its file_name are relative to")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    p.add_argument("--output-dir", default="output/score_thresholds", help="(default: %(default)s)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, last on the line (e.g. TEST.AUG.ENABLED True)")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    cfg = get_sharp_cfg(str(run / "config.yaml"), ["MODEL.WEIGHTS", str(run / "model_final.pth"), *args.opts])
    # keep every detection the run's own evaluation kept, so segm AP is the run's AP
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, *args.thresholds)
    register_json_datasets(cfg, None, args.val_json, args.image_root)
    cfg.freeze()
    set_cpu_threads(cfg)
    setup_logger(name="sharp_fpn")
    name = cfg.DATASETS.TEST[0]
    evaluators = [Trainer.build_evaluator(cfg, name, str(Path(args.output_dir) / f"thresh_{t}"), score_thresh=t)
                  for t in args.thresholds]
    model = with_test_time_flips(cfg, load_model_for_eval(cfg).eval())
    for evaluator in evaluators:
        evaluator.reset()
    with torch.no_grad():  # one pass; every evaluator sees the same outputs
        for inputs in Trainer.build_test_loader(cfg, name):
            outputs = model(inputs)
            for evaluator in evaluators:
                evaluator.process(inputs, outputs)
    rows = []
    for t, evaluator in zip(args.thresholds, evaluators):
        results = evaluator.evaluate()
        rows.append([t] + [f"{results['nuclei'][c]:.4f}" for c in COLUMNS] + [f"{results['segm']['AP']:.2f}"])
    table = common.markdown_table(["score threshold", *COLUMNS, "segm AP"], rows)
    common.write_outputs(args.output_dir, "score_thresholds", {"run": str(run), "opts": args.opts, "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
