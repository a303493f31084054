"""Make the README's picture of the napari plugin: a real napari window with the "Segment nuclei"
widget after a run, saved as a PNG. Needs an X display; headless, run it under Xvfb:

    xvfb-run -a .venv/bin/python docs/napari_screenshot.py examples/fluorescence.png
    xvfb-run -a .venv/bin/python docs/napari_screenshot.py IMAGE --weights run/model_final.pth

Without ``--weights`` it uses the shipped model, as the widget does by default.
"""
import argparse
import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication
from skimage.io import imsave

from sharp_fpn.data.image_io import load_image_array
from sharp_fpn.napari._widget import OWN_MODEL


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="the image to segment")
    parser.add_argument("--weights", type=Path, help="a trained model's weights (default: the shipped model)")
    parser.add_argument("--config", type=Path, help="its config (default: the config.yaml beside the weights)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "napari_widget.png",
                        help="where the PNG goes (default: docs/napari_widget.png)")
    parser.add_argument("--size", type=int, nargs=2, default=(1200, 700), help="window width and height in px")
    args = parser.parse_args(argv)

    viewer = napari.Viewer(title="sharp_fpn nuclei")
    viewer.window.resize(*args.size)
    image = load_image_array(args.image)
    viewer.add_image(image, name=args.image.stem, rgb=image.ndim == 3)
    _, widget = viewer.window.add_plugin_dock_widget("sharp_fpn", "Segment nuclei")
    if args.weights:
        widget.model.value = OWN_MODEL
        widget.weights.value = args.weights
        widget.config.value = args.config
    widget.run_button.native.click()
    while not widget.run_button.enabled:  # the worker thread is predicting
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):  # let the canvas draw the new layers
        QApplication.processEvents()
        time.sleep(0.05)
    if not widget.status.value or widget.status.value.startswith("error"):
        print(f"{args.image}: {widget.status.value}", file=sys.stderr)
        return 1
    viewer.layers.selection.active = viewer.layers[f"{args.image.stem}_detections"]
    viewer.reset_view()  # fit the image to the canvas the dock widget left
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)
    imsave(args.output, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"{widget.status.value}; wrote {args.output}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
