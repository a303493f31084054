#!/usr/bin/env python
"""Export a trained model in the form shipped inside the package (fp16 weights + config).

    python tools/export_model.py output/nuclei_R18_cpu/model_final.pth [--config CONFIG]
        [--name nuclei] [--output-dir sharp_fpn/pretrained]

Writes NAME.pth (the model's state dict only, in float16) and NAME.yaml (the config, by
default the config.yaml beside the checkpoint), after checking that the config's model takes
every tensor. Prints the size, the SHA-256 and the line to put into SHIPPED_MODELS in
sharp_fpn/predict/pretrained.py. Exit status 2 for a missing or mismatched file.
"""
import argparse
import sys
import traceback
from pathlib import Path

from sharp_fpn.predict import SetupError
from sharp_fpn.predict.pretrained import MAX_SHIPPED_MB, PRETRAINED_DIR, export_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a trained checkpoint, e.g. output/nuclei_R18_cpu/model_final.pth")
    parser.add_argument("--config", help="its config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--name", default="nuclei", help="model name, and the files' stem (default: %(default)s)")
    parser.add_argument("--output-dir", default=str(PRETRAINED_DIR), help="default: the package's pretrained/ folder")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        exported = export_model(args.checkpoint, args.output_dir, args.name, args.config)
    except SetupError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    megabytes = exported.num_bytes / 2**20
    print(f"wrote {exported.weights} ({megabytes:.1f} MiB, sha256 {exported.sha256})")
    print(f"wrote {exported.config}")
    if megabytes > MAX_SHIPPED_MB:
        print(f"warning: over the {MAX_SHIPPED_MB} MiB a shipped model may take", file=sys.stderr)
    if Path(args.output_dir).resolve() == PRETRAINED_DIR:
        print("registry entry for SHIPPED_MODELS in sharp_fpn/predict/pretrained.py:")
    else:
        print("registry entry (with folder=... unless the files go to sharp_fpn/pretrained/):")
    print(f"    {exported.registry_entry(args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
