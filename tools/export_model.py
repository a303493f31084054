#!/usr/bin/env python
"""Export a trained model in the form shipped inside the package (fp16 weights + config).

    python tools/export_model.py output/nuclei_R18_cpu/model_final.pth [--config CONFIG]
        [--name nuclei] [--output-dir sharp_fpn/pretrained]

Writes NAME.pth (the model's state dict only, in float16) and NAME.yaml (the config, by
default the config.yaml beside the checkpoint), after checking that the config's model takes
every tensor. The config keeps no path of the training machine: OUTPUT_DIR and every value
that is an absolute, home (~) or ../ path are blanked. Prints the size, the SHA-256 and the
line to put into SHIPPED_MODELS in sharp_fpn/predict/pretrained.py. Exit status 2 for a
missing or mismatched file.
"""
import argparse
import re
import sys
import traceback
from pathlib import Path

import yaml

from sharp_fpn.predict import SetupError
from sharp_fpn.predict.pretrained import MAX_SHIPPED_MB, PRETRAINED_DIR, export_model
from sharp_fpn.predict.writers import write_text_atomic

# A value that names a place on the training machine, not in the project.
MACHINE_PATH = re.compile(r"^(/|~|\.\./|[A-Za-z]:[\\/])")


def is_machine_path(value) -> bool:
    return isinstance(value, str) and bool(MACHINE_PATH.match(value))


def blank_machine_paths(config_path) -> list:
    """Blank OUTPUT_DIR and every machine path in an exported yaml (list items that are such
    paths are dropped); return the keys changed."""
    config_path = Path(config_path)
    data = yaml.safe_load(config_path.read_text())
    changed = []

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{name}.")
            elif isinstance(value, list) and any(is_machine_path(item) for item in value):
                node[key] = [item for item in value if not is_machine_path(item)]
                changed.append(name)
            elif value and (name == "OUTPUT_DIR" or is_machine_path(value)):
                node[key] = ""
                changed.append(name)

    walk(data, "")
    if changed:
        write_text_atomic(config_path, yaml.safe_dump(data))
    return changed


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
        blanked = blank_machine_paths(exported.config)
    except SetupError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    megabytes = exported.num_bytes / 2**20
    print(f"wrote {exported.weights} ({megabytes:.1f} MiB, sha256 {exported.sha256})")
    print(f"wrote {exported.config}" + (f" (blanked: {', '.join(blanked)})" if blanked else ""))
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
