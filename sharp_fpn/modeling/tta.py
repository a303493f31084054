"""Test-time flips (``TEST.AUG.ENABLED``): Mask R-CNN averaged over mirror images of its input.

Microscopy has no up or down, so a model's mistakes on an image and on its mirror images are
partly independent, and averaging them is accuracy a trained model has for the asking.
Detectron2's :class:`GeneralizedRCNNWithTTA` does the work: the boxes of every view are merged
by NMS, then each view's mask for the merged boxes is computed and the masks are averaged. Two
things differ here:

- the views are flips only, at the one scale the test mapper or the predictor already gave
  the image (``INPUT.RESIZE``), so evaluation and prediction still see the same pixels
  (``TEST.AUG.MIN_SIZES`` and ``MAX_SIZE``, Detectron2's shortest-edge scales, are not used);
- vertical flips join the horizontal one when the model was trained with them
  (``INPUT.DIHEDRAL``), and their masks are flipped back too (Detectron2 undoes only
  horizontal flips).

With ``TEST.AUG.FLIP`` the views are the image and its horizontal flip, or with
``INPUT.DIHEDRAL`` all four of identity, horizontal, vertical and both: inference costs about
twice the views (each view's backbone runs again for the masks).
"""
from __future__ import annotations

import torch
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances


def flip_views(horizontal: bool, vertical: bool) -> list[tuple[bool, bool]]:
    """(horizontal, vertical) flip of each view; the first is the image as given."""
    views = [(False, False)]
    if horizontal:
        views.append((True, False))
    if vertical:
        views += [(False, True), (True, True)]
    return views


class FlipViews:
    """The TTA mapper: a model input (CHW tensor at model scale, with the file's height and
    width) to its views, each with the transform from file pixels to its own pixels."""

    def __init__(self, views: list[tuple[bool, bool]]):
        self.views = views

    def __call__(self, dataset_dict: dict) -> list[dict]:
        image = dataset_dict["image"]
        height, width = image.shape[1:]
        file_shape = (dataset_dict["height"], dataset_dict["width"])
        resize = T.NoOpTransform() if file_shape == (height, width) else T.ResizeTransform(*file_shape, height, width)
        out = []
        for horizontal, vertical in self.views:
            transforms, view = [resize], image
            if horizontal:
                transforms.append(T.HFlipTransform(width))
                view = view.flip(dims=[2])
            if vertical:
                transforms.append(T.VFlipTransform(height))
                view = view.flip(dims=[1])
            out.append({"image": view.contiguous(), "height": file_shape[0], "width": file_shape[1],
                        "transforms": T.TransformList(transforms)})
        return out


class FlipTTA(GeneralizedRCNNWithTTA):
    """A trained Mask R-CNN averaged over flips of its input; called like the model itself."""

    def __init__(self, cfg, model):
        views = flip_views(cfg.TEST.AUG.FLIP, cfg.TEST.AUG.FLIP and cfg.INPUT.DIHEDRAL)
        super().__init__(cfg, model, tta_mapper=FlipViews(views), batch_size=len(views))
        # A new module starts in training mode; take the model's, or an evaluation's
        # inference_context would "restore" the shared model to training when it ends.
        self.train(self.model.training)

    @torch.no_grad()
    def detections(self, dataset_dict: dict) -> Instances:
        """The merged detections of one input, in file coordinates, with box-relative mask
        probabilities (not yet pasted), as ``model.inference(..., do_postprocess=False)``."""
        file_shape = (dataset_dict["height"], dataset_dict["width"])
        views, transforms = self._get_augmented_inputs(dataset_dict)
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]):
            boxes, scores, classes = self._get_augmented_boxes(views, transforms)
        merged = self._merge_detections(boxes, scores, classes, file_shape)
        outputs = self._batch_inference(views, self._rescale_detected_boxes(views, merged, transforms))
        merged.pred_masks = self._reduce_pred_masks(outputs, transforms)
        return merged

    def inference(self, batched_inputs: list[dict], do_postprocess: bool = True) -> list[Instances]:
        """As :meth:`GeneralizedRCNN.inference`, so a caller of the model need not know of the flips."""
        found = [self.detections(d) for d in batched_inputs]
        if not do_postprocess:
            return found
        return [detector_postprocess(i, d["height"], d["width"]) for i, d in zip(found, batched_inputs)]

    def _inference_one_image(self, dataset_dict):
        return {"instances": self.inference([dataset_dict])[0]}

    def _reduce_pred_masks(self, outputs, transforms):
        """Each view's box-relative masks flipped back as its view was flipped, then averaged."""
        masks = []
        for output, transform in zip(outputs, transforms):
            mask = output.pred_masks
            for t in transform.transforms:
                if isinstance(t, T.HFlipTransform):
                    mask = mask.flip(dims=[3])
                elif isinstance(t, T.VFlipTransform):
                    mask = mask.flip(dims=[2])
            masks.append(mask)
        return torch.stack(masks).mean(dim=0)


def with_test_time_flips(cfg, model):
    """``model`` wrapped in :class:`FlipTTA` when ``cfg.TEST.AUG.ENABLED``, else ``model``."""
    return FlipTTA(cfg, model) if cfg.TEST.AUG.ENABLED else model
