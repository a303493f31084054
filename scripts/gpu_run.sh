#!/usr/bin/env bash
# The prepared GPU run (issue 13): one command on a bare GPU machine, done in under 9 minutes.
#
#   bash scripts/gpu_run.sh [OUTPUT_DIR]                     # on the GPU machine (default: $OUT)
#   bash scripts/gpu_run.sh --tiny --device cpu OUTPUT_DIR   # the CPU dry run that CI tests
#
# It installs the carried wheels (.whl/, scripts/gpu_wheels.sh) when Detectron2 is missing,
# unpacks the carried data (GPU_DATA, default .gpu_data/, from benchmarks/gpu_data.py pack; --tiny
# packs synthetic nuclei instead unless GPU_DATA is set), then runs four parts, each under its
# own time limit, so that the script always ends and reports what each part produced:
#   a  every config in configs/ builds, takes an AMP train step and infers    benchmarks/gpu_smoke.py
#   b  per neck, R-101 at 512x512: train img/s, peak memory, latency          benchmarks/gpu_bench.py
#   c  Table 2, lower part: the necks of C_NECKS trained side by side on the 480/120 split, as
#      many iterations as fit (benchmarks/gpu_schedule.py, from b)          benchmarks/compare_necks.py
#   d  Table 2, upper part: the UNet runs of D_RUNS, beside c, time-boxed     benchmarks/iou_definitions.py
# OUTPUT_DIR receives four files: summary.md (every part's table and status), results.json,
# gpu_run.log (this console) and files.tar.gz (every log, JSON, markdown and config of the work
# folder; no weights). The work folder (GPU_WORK, default a new /tmp/sharp_fpn_gpu.*) keeps the rest.
# Exit status 0 when every part finished in time, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# ---- What parts c and d run: change it here. --------------------------------------------------
# Each can also come from the environment, e.g. a rerun of part c alone with the nuclei recipe:
#   PARTS="c" C_CONFIGS=nuclei_R18_cpu.yaml C_NECKS="plain sharp" C_SEEDS="0 1" C_ITERS=1200 \
#   C_OPTS="DATALOADER.NUM_WORKERS 3" bash scripts/gpu_run.sh
PARTS=${PARTS:-"a b c d"}   # which of the parts to run; the others are reported as skipped
C_CONFIGS=${C_CONFIGS:-"mask_rcnn_sharp_R101.yaml"}   # add mask_rcnn_sharp_VGG16.yaml if time allows (halves the iterations)
C_NECKS=${C_NECKS:-"plain nested full_scale sharp sharp:CONV=3x3"}
# KEY VALUE overrides of every part-c run (RESULTS.md#the-papers-r-101-setting-not-run-yet); from the
# environment as one space-separated string, so without values that hold spaces.
# Batch 4, not 8: at 8 the five R-101 runs side by side took 25-41 GiB each and ran out of the
# H200's 140 GiB (first GPU run, RESULTS.md#does-every-config-run-on-a-gpu).
C_OPTS_DEFAULT=(SOLVER.IMS_PER_BATCH 4 SOLVER.BASE_LR 0.01 SOLVER.AMP.ENABLED True DATALOADER.NUM_WORKERS 3)
if [[ -n ${C_OPTS:-} ]]; then read -ra C_OPTS <<< "$C_OPTS"; else C_OPTS=("${C_OPTS_DEFAULT[@]}"); fi
C_SEEDS=${C_SEEDS:-0}   # one process per config x neck x seed
C_ITERS=${C_ITERS:-}    # iterations per run; empty: as many as fit in part c's time (see gpu_schedule.py)
C_SAFETY=0.5      # share of part c's training time that the schedule plans to fill
C_EVAL_S=80       # part c's time kept for start-up and the final evaluation of the 120 images
D_RUNS=${D_RUNS:-"unet_VGG16 unet#_VGG16 unet_R101 unet#_R101"}   # unet_reproduce.py run names, one process each
D_ARGS=(--epochs 100 --amp)    # the seed's protocol, cut to the time box by --time-budget-s
D_SIZE=96
# ---- Time limits in seconds (9 minutes in all). ------------------------------------------------
SETUP_S=40; A_S=90; B_S=120; CD_S=${CD_S:-270}

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
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
D_SCRIPT=benchmarks/iou_definitions.py   # trains like unet_reproduce.py and keeps predictions
[[ -f $D_SCRIPT ]] || D_SCRIPT=benchmarks/unet_reproduce.py

if [[ $TINY == 1 ]]; then   # the same steps at a size a 2-core CPU runs in about a minute
  C_CONFIGS="demo_sharp_R18_cpu.yaml"; C_NECKS="plain sharp"; C_SEEDS=0; C_EVAL_S=30
  C_OPTS=(SOLVER.IMS_PER_BATCH 2 DATALOADER.NUM_WORKERS 0 "INPUT.MIN_SIZE_TRAIN" "(64,)" INPUT.MAX_SIZE_TRAIN 96
          INPUT.MIN_SIZE_TEST 64 INPUT.MAX_SIZE_TEST 96 MODEL.RPN.PRE_NMS_TOPK_TRAIN 50 MODEL.RPN.POST_NMS_TOPK_TRAIN 20
          MODEL.RPN.PRE_NMS_TOPK_TEST 50 MODEL.RPN.POST_NMS_TOPK_TEST 20 MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 16
          TEST.DETECTIONS_PER_IMAGE 20)
  D_RUNS="unet#_VGG16"; D_ARGS=(--epochs 1 --batch-size 2); D_SIZE=32
  A_ARGS=(--tiny --configs mask_rcnn_sharp_R50.yaml unet_sharp_ds.yaml); B_ARGS=(--tiny --necks plain sharp_pwdw)
  SCHEDULE_MIN=2; SCHEDULE_MAX=2
  SETUP_S=300; A_S=300; B_S=300; CD_S=420   # ceilings only, for slow machines: a run takes about a minute of CPU
else
  A_ARGS=(); B_ARGS=(--necks plain nested full_scale sharp sharp_pwdw --budget-s $((B_S - 40))); SCHEDULE_MIN=20; SCHEDULE_MAX=100000
fi

mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=${GPU_WORK:-$(mktemp -d /tmp/sharp_fpn_gpu.XXXXXX)}
mkdir -p "$WORK/log"
: > "$WORK/parts.tsv"

# part NAME LIMIT_S STATUS STARTED_AT: one line per part for the summary.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$3" "$((SECONDS - $4))" "$2" >> "$WORK/parts.tsv"; echo "[gpu_run] part $1: $3 ($((SECONDS - $4)) s of $2)"; }
status_of() { case $1 in 0) echo ok ;; 124|137) echo "timed out" ;; *) echo "failed (exit $1)" ;; esac; }

step() {   # step WHAT COMMAND...: a setup step within what is left of the setup's time, named when it fails
  local what=$1 left=$((SETUP_END - SECONDS)); shift
  timeout -k 5 "$((left > 1 ? left : 1))" "$@" || { local rc=$?; echo "setup: $what failed ($(status_of $rc))"; return 1; }
}

setup() {   # wheels, data, the UNet data set, the machine's description
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
  fi
  step "unpacking $BUNDLE" "$PY" benchmarks/gpu_data.py unpack --bundle "$BUNDLE" --out "$WORK/data" \
    --unet-cache "$WORK/cache" --unet-size $D_SIZE > "$WORK/unpack.txt" || return 1
  IMAGE_ROOT=$(sed -n 's/^image_root=//p' "$WORK/unpack.txt")
  NPZ=$(sed -n 's/^unet_cache=//p' "$WORK/unpack.txt")
  { command -v nvidia-smi > /dev/null && nvidia-smi || echo "no nvidia-smi"; } > "$WORK/log/machine.txt" 2>&1
}

run_c() {   # every config x neck as its own process, all at once; then one table per config
  local budget=$1 iters=$C_ITERS n_configs n_seeds
  n_configs=$(wc -w <<< "$C_CONFIGS"); n_seeds=$(wc -w <<< "$C_SEEDS")
  if [[ -z $iters ]]; then
    iters=$("$PY" benchmarks/gpu_schedule.py --bench "$WORK/b/gpu_bench.json" --seconds $((budget - C_EVAL_S)) \
      --config ${C_CONFIGS%% *} --configs "$((n_configs * n_seeds))" --necks $C_NECKS --safety $C_SAFETY --min $SCHEDULE_MIN --max $SCHEDULE_MAX \
      --fallback 300 --opts "${C_OPTS[@]}" 2>> "$WORK/log/c_schedule.log")
  fi
  echo "$iters" > "$WORK/c_iterations.txt"
  echo "[gpu_run] part c: $iters iterations per neck"
  for config in $C_CONFIGS; do
    for neck in $C_NECKS; do
      for seed in $C_SEEDS; do
        local tag=${config%.yaml}/${neck//[:=,]/_}
        [[ $n_seeds -gt 1 ]] && tag=${tag}_seed$seed
        mkdir -p "$WORK/c/$tag"
        timeout -k 15 "$budget" "$PY" benchmarks/compare_necks.py --train-json "$WORK/data/train.json" \
          --val-json "$WORK/data/val.json" --image-root "$IMAGE_ROOT" \
          --config "$config" --device "$DEVICE" --max-iter "$iters" --necks "$neck" --seeds "$seed" \
          --output-dir "$WORK/c/$tag" "${C_OPTS[@]}" > "$WORK/log/c_${tag//\//_}.log" 2>&1 &
        C_PIDS+=($!)
      done
    done
  done
}

run_d() {   # every UNet run as its own process, time-boxed by the script itself
  local budget=$1
  for run in $D_RUNS; do
    local stem=${run//#/sharp}
    timeout -k 15 "$budget" "$PY" "$D_SCRIPT" --data "$NPZ" --runs "$run" --size $D_SIZE --device "$DEVICE" \
      --time-budget-s $((budget - 60)) --time-limit-s $((budget - 40)) "${D_ARGS[@]}" --out "$WORK/d/$stem" \
      > "$WORK/log/d_$stem.log" 2>&1 &
    D_PIDS+=($!)
  done
}

collect() {   # merged tables of c and d, then summary.md, results.json and files.tar.gz
  for config in $C_CONFIGS; do
    local parts=("$WORK/c/${config%.yaml}"/*/compare_necks.json)
    [[ -f ${parts[0]} ]] && "$PY" benchmarks/compare_necks.py --collect "${parts[@]}" \
      --output-dir "$WORK/c/${config%.yaml}" > /dev/null 2>> "$WORK/log/collect.log"
  done
  if [[ $D_SCRIPT == *iou_definitions.py ]] && ls "$WORK"/d/*/predictions/*.npz > /dev/null 2>&1; then
    mkdir -p "$WORK/d/predictions" && cp "$WORK"/d/*/predictions/*.npz "$WORK/d/predictions/"
    "$PY" benchmarks/iou_definitions.py --from-predictions "$WORK/d" --out "$WORK/d" > /dev/null 2>> "$WORK/log/collect.log"
  fi
  "$PY" benchmarks/gpu_report.py --work "$WORK" --out "$OUTDIR" --device "$DEVICE" 2>> "$WORK/log/collect.log"
  (cd "$WORK" && find . -type f -size -8M \( -name '*.json' -o -name '*.md' -o -name '*.log' -o -name '*.txt' \
     -o -name '*.yaml' -o -name '*.tsv' \) ! -path './data/*' ! -path './bundle/*' -print0 |
     tar -czf "$OUTDIR/files.tar.gz" --null -T -)
}

wants() { [[ " $PARTS " == *" $1 "* ]] || { printf '%s\tskipped\t0\t0\n' "$1" >> "$WORK/parts.tsv"; return 1; }; }

wait_all() {   # the worst exit status of the given processes
  local worst=0 pid rc
  for pid in "$@"; do wait "$pid"; rc=$?; [[ $rc != 0 ]] && worst=$rc; done
  return $worst
}

main() {
  echo "[gpu_run] $(date -Is); repository $REPO; work folder $WORK; output $OUTDIR; device $DEVICE"
  local t0=$SECONDS
  setup > "$WORK/log/setup.log" 2>&1
  local rc=$?
  record setup $SETUP_S "$(status_of $rc)" $t0
  if [[ $rc != 0 ]]; then tail -3 "$WORK/log/setup.log"; collect; return 1; fi
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1   # many processes share the host's cores

  wants a && { t0=$SECONDS
    timeout -k 15 $A_S "$PY" benchmarks/gpu_smoke.py --device "$DEVICE" --output-dir "$WORK/a" "${A_ARGS[@]}" \
      > "$WORK/log/a.log" 2>&1
    record a $A_S "$(status_of $?)" $t0; }

  wants b && { t0=$SECONDS
    timeout -k 15 $B_S "$PY" benchmarks/gpu_bench.py --device "$DEVICE" --output-dir "$WORK/b" "${B_ARGS[@]}" \
      > "$WORK/log/b.log" 2>&1
    record b $B_S "$(status_of $?)" $t0; }

  t0=$SECONDS
  C_PIDS=(); D_PIDS=()
  local c=0 d=0
  wants c && { c=1; run_c $CD_S; }
  wants d && { d=1; run_d $CD_S; }
  [[ $c == 1 ]] && { wait_all "${C_PIDS[@]}"; record c $CD_S "$(status_of $?)" $t0; }
  [[ $d == 1 ]] && { wait_all "${D_PIDS[@]}"; record d $CD_S "$(status_of $?)" $t0; }

  collect
  cat "$OUTDIR/summary.md" 2>/dev/null
  echo "[gpu_run] done in $SECONDS s; wrote $OUTDIR/{summary.md,results.json,gpu_run.log,files.tar.gz}; work folder $WORK"
  ! grep -v $'\tskipped\t' "$WORK/parts.tsv" | grep -qv $'\tok\t'  # skipped parts are no failure
}

mkdir -p "$OUTDIR"
main 2>&1 | tee "$OUTDIR/gpu_run.log"
exit "${PIPESTATUS[0]}"
