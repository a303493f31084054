#!/usr/bin/env bash
# Download the wheels that scripts/gpu_run.sh installs on a bare GPU machine into .whl/ (ignored
# by git, carried with the run). That machine has Python 3.12 with torch, torchvision, numpy,
# OpenCV, scikit-image, tifffile, tqdm, PyYAML, tabulate, portalocker, cloudpickle, matplotlib
# and tensorboard, and reaches no package registry: these are what it lacks. Pinned to the
# versions the development environment runs. imagecodecs (tens of MB) stays behind: the
# carried data are PNGs, which OpenCV reads alone.
#
#   bash scripts/gpu_wheels.sh            # PYTHON=... picks the interpreter that runs pip
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
DEST=.whl

# Compiled for CPython 3.12 manylinux x86_64, or pure Python with a published wheel.
BINARY=(pycocotools==2.0.11 faster-coco-eval==1.8.0 yacs==0.1.8 omegaconf==2.3.1 hydra-core==1.3.8
        roifile==2026.2.10 termcolor==3.3.0)
# Published only as source: built here into pure-Python wheels.
SOURCE=(fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3)
# Detectron2's PyPI repackaging (upstream commit a59f0563) ships one cp310 wheel; as in
# scripts/setup_env.sh it is installed with pip's cross-version flags.
D2="sal-detectron2==0.7.2"

pip() { "$PY" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
rm -rf "$DEST" && mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d "$DEST" "${BINARY[@]}"
pip wheel --no-deps -w "$DEST" "${SOURCE[@]}"
pip download --no-deps --only-binary=:all: --python-version 3.10 -d "$DEST" "$D2"

# The cp310 wheel carries detectron2/_C (6 MB compressed), a CPython 3.10 extension that
# Python 3.12 cannot load (Detectron2 then takes ROIAlign and NMS from torchvision): drop it,
# and its RECORD line, from the carried copy.
"$PY" - "$DEST"/sal_detectron2-*.whl <<'EOF'
import sys, zipfile
from pathlib import Path

wheel = Path(sys.argv[1])
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if item.filename.startswith("detectron2/_C."):
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"detectron2/_C."))
        dst.writestr(item, data)
slim.replace(wheel)
EOF

ls -l "$DEST"
echo "[gpu_wheels] $(ls "$DEST"/*.whl | wc -l) wheels, $(du -cb "$DEST"/*.whl | tail -1 | cut -f1) bytes in $DEST/"
