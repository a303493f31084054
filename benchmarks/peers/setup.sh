#!/usr/bin/env bash
# Make one peer's own virtual environment, outside the repository and apart from the project's.
#
#   benchmarks/peers/setup.sh stardist|cellpose [ENV_DIR]
#
# ENV_DIR defaults to $PEER_ENVS/<peer>, and PEER_ENVS to $HOME/peer_envs. PYTHON picks the
# interpreter (default python3.11; StarDist's TensorFlow 2.15 needs 3.9-3.11). Neither peer is a
# dependency of sharp_fpn or of its tests: their scripts run with this environment's python, and
# only benchmarks/peers/score.py runs in the project's own.
#
# Cellpose needs PyTorch. Plain `pip install cellpose` pulls the newest torch, which on Linux is a
# CUDA build of several GB, so torch is installed first, pinned by TORCH_SPEC (default
# torch==2.13.0, the CPU wheel that pip finds on this project's machines); set TORCH_SPEC and
# PIP_EXTRA (e.g. "--index-url <a CPU wheel index>") where that wheel is not on disk.
set -euo pipefail

usage() { echo "usage: $0 stardist|cellpose [ENV_DIR]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
peer=$1
case "$peer" in stardist|cellpose) ;; *) usage ;; esac
env_dir=${2:-${PEER_ENVS:-$HOME/peer_envs}/$peer}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || { echo "error: $python not found (set PYTHON)" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
case "$(cd "$(dirname "$env_dir")" 2>/dev/null && pwd)/" in
  "$repo"/*) echo "warning: $env_dir is inside the repository; keep peer environments outside it" >&2 ;;
esac

"$python" -m venv "$env_dir"
pip=("$env_dir/bin/python" -m pip install --no-input ${PIP_EXTRA:-})
"${pip[@]}" --upgrade pip wheel

# Both scripts read the converter's COCO JSON (pycocotools for its RLE masks) and images.
common=(pycocotools tifffile imageio)
if [[ $peer == stardist ]]; then
  # Versions checked together on Python 3.11: TensorFlow 2.15 brings Keras 2, which StarDist 0.9
  # and CSBDeep 0.8 use; numpy 1.26 because TensorFlow 2.15 is built against numpy 1.x.
  "${pip[@]}" "numpy==1.26.4" "tensorflow-cpu==2.15.1" "csbdeep==0.8.2" "stardist==0.9.2" "${common[@]}"
else
  "${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
  # torch is already satisfied, so this installs no other build of it.
  "${pip[@]}" "cellpose==${CELLPOSE_VERSION:-3.1.1.3}" "${common[@]}"
fi
"$env_dir/bin/python" -m pip freeze > "$env_dir/peer_freeze.txt"
echo "made $env_dir ($peer); package versions in $env_dir/peer_freeze.txt"
echo "run its script with: $env_dir/bin/python $repo/benchmarks/peers/${peer}_peer.py --help"
