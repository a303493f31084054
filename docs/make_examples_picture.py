#!/usr/bin/env python
"""Redraw docs/shipped_model_examples.png, the README's picture of the shipped model, from the
overlays that ``tools/predict.py examples/`` writes: fluorescence, H&E tissue and brightfield
side by side at one height, so the picture always shows the model that ships.

    python tools/predict.py examples/ --output-dir predictions
    python docs/make_examples_picture.py predictions [--output docs/shipped_model_examples.png]
"""
import argparse
from pathlib import Path

from PIL import Image

EXAMPLES = ("fluorescence", "he_tissue", "brightfield")
HEIGHT, GAP = 320, 8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="tools/predict.py's output folder for examples/")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("shipped_model_examples.png"))
    args = parser.parse_args(argv)
    panels = []
    for name in EXAMPLES:
        path = args.predictions / f"{name}_overlay.png"
        if not path.is_file():
            parser.error(f"{path}: missing; run tools/predict.py examples/ --output-dir {args.predictions} first")
        panel = Image.open(path).convert("RGB")
        panels.append(panel.resize((round(panel.width * HEIGHT / panel.height), HEIGHT), Image.LANCZOS))
    picture = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1), HEIGHT), "white")
    x = 0
    for panel in panels:
        picture.paste(panel, (x, 0))
        x += panel.width + GAP
    picture.save(args.output, optimize=True)
    print(f"wrote {args.output} ({picture.width}x{picture.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
