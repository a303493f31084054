#!/usr/bin/env bash
# The prepared GPU window (issue 39, docs/gpu_run.md): one command on a bare GPU machine that
# ends within 10 minutes (about 7.5 typically) and hands back what each part finished.
#
#   bash scripts/gpu_run.sh [OUTPUT_DIR]                     # on the GPU machine (default: $OUT)
#   bash scripts/gpu_run.sh --tiny --device cpu OUTPUT_DIR   # the CPU dry run that CI tests
#
# Setup installs the carried wheels (.whl/, scripts/gpu_wheels.sh) when Detectron2 is missing and
# unpacks the carried data (GPU_DATA, default .gpu_data/, from benchmarks/gpu_data.py pack; --tiny
# packs synthetic nuclei instead unless GPU_DATA is set). Then two parts run side by side, each
# run one process of benchmarks/gpu_train.py: it trains until its part's deadline, for as many
# iterations as the part's runs agree fit (planned at A_PLAN_S / B_PLAN_S; see that script),
# evaluates, and writes its results as soon as it has them:
#   a  Table 2 on R-101: mask_rcnn_sharp_R101.yaml (GN, random weights, AMP) with the nuclei
#      recipe's input pipeline (nuclei_R18_cpu.yaml: x2 scale, 256 px crops, symmetries,
#      intensity), one process per neck and seed of A_RUNS, trained on the 480/120 split and
#      evaluated on the 120 val images, with the evaluator's per-image records
#   b  a shipped-model candidate: nuclei_R18_cpu_cascade.yaml on plain FPN (the shipped recipe) on the
#      596 images that are not examples, scored on the 4 examples, and its twin on the 480,
#      scored on the 120; both exported in the shipped form (float16)
# OUTPUT_DIR receives at most 8 files: summary.md (every run's table and status), results.json,
# gpu_run.log (this console), files.tar.gz (every log, JSON, markdown and config of the work
# folder, the per-image records included; no weights) and the two float16 weight files in parts
# of at most 15 MiB (nuclei_gpu.pth.part0 ...; cat them back together). The files are written
# once part b ends and again at the end. The work folder (GPU_WORK, default a new
# /tmp/sharp_fpn_gpu.*) keeps the rest. Exit status 0 when every part finished in time, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# ---- What the parts run: change it here, or from the environment (PARTS, A_RUNS, and the ------
# ---- times below, e.g. PARTS=b B_TRAIN_S=480 B_S=560 for a longer candidate alone). -----------
PARTS=${PARTS:-"a b"}
A_CONFIG=mask_rcnn_sharp_R101.yaml
A_INPUT=nuclei_R18_cpu.yaml   # the recipe whose whole INPUT node part a takes
A_RUNS=${A_RUNS:-"plain@0 sharp@0 plain@1 sharp@1 nested@0 full_scale@0"}   # NECK@SEED, one process each
# Batch 8 and lr 0.02, as on 2026-11-30, when R-101 took 20-41 GiB per process on whole images
# (short side 512-768). Activations saved for the backward pass, measured on the CPU (float32,
# synthetic nuclei): 1.4 GiB per 640 px image, 0.45 GiB per 256 px crop (the mask head's share
# does not shrink with the image); so about 7-13 GiB per process at batch 8, eval included.
A_OPTS=(SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.02 SOLVER.WARMUP_ITERS 100 SOLVER.AMP.ENABLED True
        DATALOADER.NUM_WORKERS 2)
A_MEM=0.13    # each part-a process's share of the GPU's memory (18 GiB of an H200's 139)
B_CONFIG=nuclei_R18_cpu_cascade.yaml   # the shipped model's recipe since 2026-12-05: Cascade R-CNN on plain FPN
B_OPTS=(MODEL.SHARP_FPN.SCHEME plain MODEL.RPN.PRE_NMS_TOPK_TEST 600 MODEL.RPN.POST_NMS_TOPK_TEST 300
        SOLVER.WARMUP_ITERS 100 SOLVER.AMP.ENABLED True DATALOADER.NUM_WORKERS 3)
B_MEM=0.06    # 8 GiB each; 6 x 0.13 + 2 x 0.06 = 0.90 of the GPU
HOLDOUT_IDS=examples/dsb2018_ids.txt   # what the shipped model never saw
MAX_ITER=100000
# ---- Time in seconds from the parts' start: plan, end of training, hard limit (eval included). -
SETUP_S=60
A_PLAN_S=${A_PLAN_S:-120}; A_TRAIN_S=${A_TRAIN_S:-300}; A_S=${A_S:-500}
B_PLAN_S=${B_PLAN_S:-100}; B_TRAIN_S=${B_TRAIN_S:-240}; B_S=${B_S:-400}

usage() { sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
TINY=0; DEVICE=cuda; OUTDIR=${OUT:-}
while [[ $# -gt 0 ]]; do
  case $1 in
    --tiny) TINY=1 ;;
    --device) DEVICE=$2; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu_run.sh: unknown option $1" >&2; usage ;;
    *) OUTDIR=$1 ;;
  esac
  shift
done
[[ -n $OUTDIR ]] || { echo "gpu_run.sh: give an output folder (or set OUT)" >&2; exit 2; }
PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo "$REPO/.venv/bin/python" || echo python3)}
BUNDLE=${GPU_DATA:-.gpu_data}

if [[ $TINY == 1 ]]; then   # the same steps at a size that 2 CPU cores run in well under a minute
  A_RUNS="plain@0 sharp@0"; MAX_ITER=2; A_PLAN_S=0; B_PLAN_S=0
  TINY_OPTS=(SOLVER.IMS_PER_BATCH 2 SOLVER.AMP.ENABLED False DATALOADER.NUM_WORKERS 0 INPUT.CROP.SIZE "[64, 64]"
             INPUT.SCALE_TRAIN "(0.8, 1.2)" INPUT.SCALE_TEST 1.0 MODEL.RPN.PRE_NMS_TOPK_TRAIN 50
             MODEL.RPN.POST_NMS_TOPK_TRAIN 20 MODEL.RPN.PRE_NMS_TOPK_TEST 50 MODEL.RPN.POST_NMS_TOPK_TEST 20
             MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 16 TEST.DETECTIONS_PER_IMAGE 20)
  A_OPTS+=("${TINY_OPTS[@]}" MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.RES2_OUT_CHANNELS 64)   # R-18 for R-101
  B_OPTS+=("${TINY_OPTS[@]}")
  SETUP_S=300; A_TRAIN_S=300; B_TRAIN_S=300; A_S=300; B_S=300   # ceilings only, for slow machines
fi

mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=${GPU_WORK:-$(mktemp -d /tmp/sharp_fpn_gpu.XXXXXX)}
DATA=$WORK/data
mkdir -p "$WORK/log"
: > "$WORK/parts.tsv"

# record PART LIMIT_S STATUS STARTED_AT: one line per part for the summary.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$3" "$((SECONDS - $4))" "$2" >> "$WORK/parts.tsv"; echo "[gpu_run] part $1: $3 ($((SECONDS - $4)) s of $2)"; }
status_of() { case $1 in 0) echo ok ;; 124|137) echo "timed out" ;; *) echo "failed (exit $1)" ;; esac; }

step() {   # step WHAT COMMAND...: a setup step within what is left of the setup's time, named when it fails
  local what=$1 left=$((SETUP_END - SECONDS)); shift
  timeout -k 5 "$((left > 1 ? left : 1))" "$@" || { local rc=$?; echo "setup: $what failed ($(status_of $rc))"; return 1; }
}

setup() {   # wheels, data (the 480/120 split and the shipped model's), the machine's description
  SETUP_END=$((SECONDS + SETUP_S))
  if ! "$PY" -c "import detectron2" 2>/dev/null; then
    ls .whl/*.whl > /dev/null 2>&1 || { echo "setup: no .whl/: run scripts/gpu_wheels.sh and carry .whl"; return 1; }
    local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site")
    step "installing Detectron2" "${pip[@]}" --python-version 3.10 --only-binary=:all: .whl/sal_detectron2-*.whl || return 1
    step "installing the wheels" "${pip[@]}" $(ls .whl/*.whl | grep -v sal_detectron2) || return 1
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  if [[ $TINY == 1 && -z ${GPU_DATA:-} ]]; then   # the dry run packs synthetic nuclei the same way
    BUNDLE=$WORK/bundle
    step "packing synthetic data" "$PY" benchmarks/gpu_data.py synthetic --bundle "$BUNDLE" || return 1
    HOLDOUT_IDS=$WORK/holdout_ids.txt   # and holds out its first image
    ls "$BUNDLE/images" | head -1 | sed 's/\.webp$//' > "$HOLDOUT_IDS"
  fi
  step "unpacking $BUNDLE" "$PY" benchmarks/gpu_data.py unpack --bundle "$BUNDLE" --out "$DATA" \
    --holdout-ids "$HOLDOUT_IDS" > "$WORK/unpack.txt" || return 1
  IMAGE_ROOT=$(sed -n 's/^image_root=//p' "$WORK/unpack.txt")
  { command -v nvidia-smi > /dev/null && nvidia-smi || echo "no nvidia-smi"; } > "$WORK/log/machine.txt" 2>&1
}

launch() {   # launch PART NAME LIMIT_S ARGS...: one gpu_train.py process in the background
  local part=$1 name=$2 limit=$3; shift 3
  mkdir -p "$WORK/$part/$name"
  timeout -k 15 "$limit" "$PY" benchmarks/gpu_train.py --name "$name" --output-dir "$WORK/$part/$name" \
    --device "$DEVICE" --plan-dir "$WORK/$part/plan" --max-iter $MAX_ITER "$@" > "$WORK/log/${part}_$name.log" 2>&1 &
  PIDS+=($!)
}

wait_all() {   # the worst exit status of the given processes
  local worst=0 pid rc
  for pid in "$@"; do wait "$pid"; rc=$?; [[ $rc != 0 ]] && worst=$rc; done
  return $worst
}

part_a() {   # every neck and seed of A_RUNS at once, on the 480/120 split
  local t0=$SECONDS now run runs=($A_RUNS)
  now=$(date +%s); PIDS=()
  for run in "${runs[@]}"; do
    local neck=${run%@*} seed=${run##*@}
    launch a "${neck//[:=,]/_}_seed$seed" $A_S --config $A_CONFIG --input-from $A_INPUT --neck "$neck" --seed "$seed" \
      --train-json "$DATA/train.json" --val-json "$DATA/val.json" --image-root "$IMAGE_ROOT" \
      --plan-at $((now + A_PLAN_S)) --deadline $((now + A_TRAIN_S)) --plan-runs ${#runs[@]} --memory-fraction $A_MEM \
      "${A_OPTS[@]}"
  done
  wait_all "${PIDS[@]}"
  record a $A_S "$(status_of $?)" $t0
}

part_b() {   # the candidate (596 images) and its twin (480), the same run on two splits
  local t0=$SECONDS now
  now=$(date +%s); PIDS=()
  local common=(--config $B_CONFIG --seed 0 --image-root "$IMAGE_ROOT" --plan-at $((now + B_PLAN_S))
                --deadline $((now + B_TRAIN_S)) --plan-runs 2 --memory-fraction $B_MEM)
  launch b candidate $B_S "${common[@]}" --train-json "$DATA/train_all.json" --val-json "$DATA/holdout.json" \
    --export nuclei_gpu "${B_OPTS[@]}"
  launch b twin $B_S "${common[@]}" --train-json "$DATA/train.json" --val-json "$DATA/val.json" \
    --export nuclei_gpu_twin "${B_OPTS[@]}"
  wait_all "${PIDS[@]}"
  record b $B_S "$(status_of $?)" $t0
}

sample_usage() {   # every 10 s: time, load average, GPU utilisation and memory in use
  while sleep 10; do
    echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg) $(nvidia-smi --query-gpu=utilization.gpu,memory.used \
      --format=csv,noheader,nounits 2>/dev/null | tr -d ' ')"
  done >> "$WORK/log/usage.txt"
}

collect() {   # summary.md, results.json, files.tar.gz, the weights' parts; with "final", part a's merged table
  local parts=("$WORK"/a/*/compare_necks.json)
  [[ ${1:-} == final && -f ${parts[0]} ]] && "$PY" benchmarks/compare_necks.py --collect "${parts[@]}" \
    --output-dir "$WORK/a" > /dev/null 2>> "$WORK/log/collect.log"
  "$PY" benchmarks/gpu_report.py --work "$WORK" --out "$OUTDIR" --device "$DEVICE" 2>> "$WORK/log/collect.log"
  (cd "$WORK" && find . -type f -size -8M \( -name '*.json' -o -name '*.md' -o -name '*.log' -o -name '*.txt' \
     -o -name '*.yaml' -o -name '*.tsv' \) ! -path './data/*' ! -path './bundle/*' ! -path './site/*' -print0 |
     tar -czf "$OUTDIR/files.tar.gz.partial" --null -T - && mv "$OUTDIR/files.tar.gz.partial" "$OUTDIR/files.tar.gz")
  local weights room
  for weights in "$WORK"/b/candidate/nuclei_gpu.pth "$WORK"/b/twin/nuclei_gpu_twin.pth; do
    [[ -f $weights && ! -f $OUTDIR/$(basename "$weights").part0 ]] || continue
    room=$((8 - $(ls "$OUTDIR" | wc -l) - $(( ($(stat -c %s "$weights") - 1) / 15728640 + 1 )) ))
    if [[ $room -ge 0 ]]; then
      split -b 15M -d -a 1 "$weights" "$OUTDIR/$(basename "$weights").part"
    else
      echo "[gpu_run] no room in the 8 files for $weights" | tee -a "$WORK/log/collect.log"
    fi
  done
}

wants() { [[ " $PARTS " == *" $1 "* ]] || { printf '%s\tskipped\t0\t0\n' "$1" >> "$WORK/parts.tsv"; return 1; }; }

main() {
  echo "[gpu_run] $(date -Is); repository $REPO; work folder $WORK; output $OUTDIR; device $DEVICE"
  local t0=$SECONDS
  setup > "$WORK/log/setup.log" 2>&1
  local rc=$?
  record setup $SETUP_S "$(status_of $rc)" $t0
  if [[ $rc != 0 ]]; then tail -3 "$WORK/log/setup.log"; collect final; return 1; fi
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1   # many processes share the host's cores
  sample_usage 2> /dev/null & local sampler=$!   # (its sleep must not hold the console open)
  local a=0 b=0
  wants a && { part_a & a=$!; }
  wants b && { part_b & b=$!; }
  [[ $b != 0 ]] && { wait $b; collect; }   # part b's weights go out before part a ends
  [[ $a != 0 ]] && wait $a
  kill $sampler 2>/dev/null
  collect final
  cat "$OUTDIR/summary.md" 2>/dev/null
  echo "[gpu_run] done in $SECONDS s; wrote $(cd "$OUTDIR" && echo *) in $OUTDIR; work folder $WORK"
  ! grep -v $'\tskipped\t' "$WORK/parts.tsv" | grep -qv $'\tok\t'  # skipped parts are no failure
}

mkdir -p "$OUTDIR"
main 2>&1 | tee "$OUTDIR/gpu_run.log"
exit "${PIPESTATUS[0]}"
