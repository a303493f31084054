#!/usr/bin/env bash
# Create .venv with torch, Detectron2 and sharp_fpn (editable). Idempotent: a
# stamp keyed on this script and setup.py makes a second run a no-op.
#
#   VENV=path                 where the environment goes (default .venv)
#   DETECTRON2_SOURCE=path    build Detectron2 from a local source tree instead of
#                             the PyPI repackaging (needs a compiler; GPU users).
#   NAPARI=0                  leave out the napari plugin's dependencies (napari, Qt, Xvfb)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
D2_WHEEL="sal-detectron2==0.7.2"   # upstream Detectron2 a59f0563 repackaged, cp310-only

stamp_key=$(cat scripts/setup_env.sh setup.py | sha256sum | cut -c1-16)-${DETECTRON2_SOURCE:-registry}-napari${NAPARI:-1}
stamp="$VENV/.sharp_fpn_setup"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_key" ]]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
# pip, minus the notes about this machine's absent local index folders.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

echo "[setup] installing torch, torchvision and dependencies into $VENV"
# torch first and on its own: the ranges in setup.py then install nothing more.
pip install "torch>=2.1,<=2.14.1" "torchvision>=0.16,<=0.29.1"
pip install fvcore iopath pycocotools "omegaconf>=2.1,<2.4" "hydra-core>=1.1" yacs tabulate \
  cloudpickle matplotlib tensorboard termcolor packaging black tqdm

if [[ -n "${DETECTRON2_SOURCE:-}" ]]; then
  echo "[setup] building Detectron2 from $DETECTRON2_SOURCE"
  pip install --no-build-isolation -e "$DETECTRON2_SOURCE"
elif ! "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
  echo "[setup] installing Detectron2 ($D2_WHEEL, pure-Python parts; ops come from torchvision)"
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  pip install --no-deps --only-binary=:all: --python-version 3.10 --target "$site" --upgrade "$D2_WHEEL"
fi

if [[ "${NAPARI:-1}" == 0 ]]; then
  pip install -e ".[test]"
else
  # The napari plugin and its tests: napari + PyQt6 from PyPI, and the system libraries Qt and
  # napari's OpenGL canvas load, plus Xvfb, the virtual display the tests run on (README "napari
  # plugin"). apt-get runs only as root and only for what is missing.
  qt_debs=(xvfb libgl1 libegl1 libopengl0 libglx-mesa0 libgl1-mesa-dri libfontconfig1 fonts-dejavu-core
    libglib2.0-0 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4
    libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1
    libxcb-xfixes0 libxcb-xkb1 libxcb-glx0)
  missing=()
  if command -v dpkg-query >/dev/null; then
    for deb in "${qt_debs[@]}"; do
      [[ "$(dpkg-query -W -f='${db:Status-Status}' "$deb" 2>/dev/null)" == installed ]] || missing+=("$deb")
    done
  fi
  if (( ${#missing[@]} )) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[setup] installing the system libraries of Qt and Xvfb for napari: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      echo "[setup] apt-get failed: the napari tests need these Debian packages: ${missing[*]}" >&2
  elif (( ${#missing[@]} )); then
    echo "[setup] not root: ask for these Debian packages for the napari plugin and its tests: ${missing[*]}" >&2
  fi
  pip install -e ".[test,napari,napari-test]"
fi
echo "$stamp_key" > "$stamp"
echo "[setup] done: $VENV"
