#!/usr/bin/env bash
# The main job: every stage for a list of batch sizes, ending with accuracy and images/s tables.
#
#   bash T2T_ViT_eval.sh --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir /data/imagenet/val [--batch-sizes "1 4 8"]
#                        [--work-dir work] [--backend openvino|onnxruntime] [--loop 6] [--om-dir WORK/om]
#   bash T2T_ViT_eval.sh --demo [--demo-images 16]   # no checkpoint, no dataset: synthetic images, random weights
#
# Stages: preprocess once (WORK/prep_bins, WORK/label.npy); export the sum form and keep_dtype.cfg for
# the NPU (WORK/T2T_ViT_14_sum.onnx, WORK/keep_dtype.cfg) and the fastest form for the CPU
# (WORK/T2T_ViT_14_matmul.onnx); then per batch size: inference (ais_bench on WORK/om/T2T_ViT_bs<N>.om
# when that file exists and ais_bench is installed, else the CPU runner), postprocess, and
# pure-inference throughput. The tables go to stdout, WORK/eval_summary.json and WORK/eval_summary.png.
# Re-running reuses what is done (bins, ONNX files, results) and redoes what is out of date.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/.venv/bin/python" ]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"  # for python -m t2t_vit.* from any folder

pth="" data="" batch_sizes="1 4 8 16 32 64" work="work" backend="openvino" cpu_performer="matmul" loop="" demo=0
om_dir="" demo_images=16

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --pth-path) pth="${2:-}"; shift 2 ;;
    --data-dir) data="${2:-}"; shift 2 ;;
    --batch-sizes) batch_sizes="${2:-}"; shift 2 ;;
    --work-dir) work="${2:-}"; shift 2 ;;
    --backend) backend="${2:-}"; shift 2 ;;
    --loop) loop="${2:-}"; shift 2 ;;
    --om-dir) om_dir="${2:-}"; shift 2 ;;
    --demo) demo=1; shift ;;
    --demo-images) demo_images="${2:-}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

for bs in $batch_sizes; do
  [[ "$bs" =~ ^[1-9][0-9]*$ ]] || die "batch size '$bs' is not a positive integer (--batch-sizes \"1 4 8\")"
done
loop="${loop:-$([ "$demo" = 1 ] && echo 2 || echo 6)}"  # timed runs per batch size: best a multiple of the runner's streams (one per core)
[[ "$loop" =~ ^[1-9][0-9]*$ ]] || die "--loop must be a positive integer"
case "$backend" in openvino|onnxruntime) ;; *) die "--backend must be openvino or onnxruntime" ;; esac
mkdir -p "$work"
om_dir="${om_dir:-$work/om}"

if [ "$demo" = 1 ]; then
  [ -z "$pth$data" ] || die "--demo makes its own checkpoint and images; leave out --pth-path and --data-dir"
  step "demo data (random weights: the accuracy means nothing)"
  "$PYTHON" -m t2t_vit.demo --out-dir "$work/demo" --images "$demo_images"
  pth="$work/demo/random_t2t_vit_14.pth.tar"
  data="$work/demo/val"
fi
[ -n "$pth" ] || die "--pth-path is required (or --demo)"
[ -n "$data" ] || die "--data-dir is required (or --demo)"
[ -f "$pth" ] || die "checkpoint $pth does not exist"
[ -d "$data" ] || die "--data-dir $data is not a directory"
bins="$work/prep_bins" labels="$work/label.npy"
step "preprocess $data -> $bins"
"$PYTHON" "$here/T2T_ViT_preprocess.py" --data-dir "$data" --out-dir "$bins" --gt-path "$labels" -q

export_form() {  # $1 = performer; reuses an export newer than the checkpoint
  local onnx="$work/T2T_ViT_14_$1.onnx"
  if [ -f "$onnx" ] && [ "$onnx" -nt "$pth" ]; then
    echo "reusing $onnx" >&2
  else
    "$PYTHON" "$here/T2T_ViT_pth2onnx.py" --pth-path "$pth" --onnx-path "$onnx" --performer "$1" -q >&2
  fi
  echo "$onnx"
}
step "export (sum form + keep_dtype.cfg for the NPU, $cpu_performer form for the CPU)"
sum_onnx=$(export_form sum)
if [ ! -f "$work/keep_dtype.cfg" ] || [ "$sum_onnx" -nt "$work/keep_dtype.cfg" ]; then
  "$PYTHON" "$here/gen_cfg.py" "$sum_onnx" "$work/keep_dtype.cfg" -q
fi
cpu_onnx=$(export_form "$cpu_performer")

have_ais_bench=0
"$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('ais_bench') is None)" 2>/dev/null \
  && have_ais_bench=1

for bs in $batch_sizes; do
  om="$om_dir/T2T_ViT_bs${bs}.om"
  if [ "$have_ais_bench" = 1 ] && [ -f "$om" ]; then
    runner=("$PYTHON" -m ais_bench --model "$om") model="$om" name="ais_bench"
  else
    runner=("$PYTHON" "$here/T2T_ViT_infer.py" --model "$cpu_onnx" --backend "$backend" --no-progress -q)
    model="$cpu_onnx" name="$backend"
  fi
  summary="$work/result/bs${bs}_summary.json"
  step "batch $bs: inference ($name)"
  if [ -f "$summary" ] && [ "$summary" -nt "$model" ] && [ "$summary" -nt "$labels" ]; then
    echo "reusing $work/result/bs${bs}"
  else
    rm -rf "$work/result/bs${bs}"
    "${runner[@]}" --input "$bins" --output "$work/result" --output_dirname "bs${bs}" --outfmt BIN \
      --batchsize "$bs" --warmup_count 0 > "$work/infer_bs${bs}.log"
  fi
  "$PYTHON" "$here/T2T_ViT_postprocess.py" --result-dir "$work/result/bs${bs}" --gt-path "$labels" \
    --results-file "$work/acc_bs${bs}.json" -q
  step "batch $bs: throughput (pure inference, $loop runs)"
  perf="$work/perf/bs${bs}_summary.json"
  if [ -f "$perf" ] && [ "$perf" -nt "$model" ]; then
    echo "reusing $perf"
  else
    "${runner[@]}" --output "$work/perf" --output_dirname "bs${bs}" --batchsize "$bs" --loop "$loop" \
      --warmup_count 1 | grep throughput
  fi
done

step "summary"
demo_flag=()
[ "$demo" = 1 ] && demo_flag=(--demo)
"$PYTHON" -m t2t_vit.evalreport --work-dir "$work" --batch-sizes "$batch_sizes" --backend "$backend" \
  --cpu-onnx "$cpu_onnx" --checkpoint "$pth" --data-dir "$data" "${demo_flag[@]}"
