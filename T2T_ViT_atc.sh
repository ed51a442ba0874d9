#!/usr/bin/env bash
# Stage 4 on the Ascend host: ONNX -> one offline model T2T_ViT_bs<N>.om per batch size, with ATC.
#
#   bash T2T_ViT_atc.sh --onnx t2t_vit_14_sum.onnx [--soc-version Ascend310P3] [--batch-sizes "1 4 8 16 32 64"]
#                       [--keep-dtype keep_dtype.cfg] [--out-dir .] [--aipp] [--dynamic-batch]
#
# Runs, per batch size:
#   atc --framework=5 --model=ONNX --output=OUT_DIR/T2T_ViT_bs${bs} --input_format=NCHW
#       --input_shape="image:${bs},3,S,S" --log=error --soc_version=SOC --keep_dtype=CFG
# S is the ONNX's own input size (224; 384 for t2t_vit_14_384), read with python3 -m t2t_vit.ascend.aipp --shape.
# A keep_dtype.cfg without names (gen_cfg.py --minimize found fp16 holds) leaves --keep_dtype out.
# With --aipp (for the uint8 bins of T2T_ViT_preprocess.py --dtype uint8) it first writes OUT_DIR/aipp.cfg,
# static AIPP that normalises on the chip with the mean, std and crop size the ONNX records
# (python3 -m t2t_vit.ascend.aipp, with .venv/bin/python beside this script or $PYTHON), and adds
#       --insert_op_conf=OUT_DIR/aipp.cfg
# to each command: the .om then takes uint8 (N,S,S,3). Give it the float sum export, never the uint8 one.
# The soc version is "Ascend" + the Name column of `npu-smi info` (310P3 -> Ascend310P3) unless given.
# ATC writes T2T_ViT_bs${bs}.om, or T2T_ViT_bs${bs}_<os>_<arch>.om on some versions: either is found,
# and the second is linked as T2T_ViT_bs${bs}.om. keep_dtype.cfg comes from gen_cfg.py.
# With --dynamic-batch it builds one model for every batch size instead, OUT_DIR/T2T_ViT_dyn.om, with
#       --input_shape="image:-1,3,S,S" --dynamic_batch_size="1,4,8,16,32,64"
# (ATC's gears: 2 to 100 batch sizes); ais_bench runs it with --dymBatch N, N one of the gears.
# Beside each .om it writes T2T_ViT_bs${bs}.om.json (T2T_ViT_dyn.om.json, whose "dynamic_batch_sizes" lists the gears): the SHA-256 of the ONNX, keep_dtype.cfg, aipp.cfg and
# .om and the input dtype, so that T2T_ViT_eval.sh runs an .om only when it was built from that run's own
# export for its bins.
set -euo pipefail

onnx="" soc="" batch_sizes="1 4 8 16 32 64" keep_dtype="keep_dtype.cfg" out_dir="." aipp=0 dynamic=0
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --onnx) onnx="${2:-}"; shift 2 ;;
    --soc-version) soc="${2:-}"; shift 2 ;;
    --batch-sizes) batch_sizes="${2:-}"; shift 2 ;;
    --keep-dtype) keep_dtype="${2:-}"; shift 2 ;;
    --out-dir) out_dir="${2:-}"; shift 2 ;;
    --aipp) aipp=1; shift ;;
    --dynamic-batch) dynamic=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[ -n "$onnx" ] || { usage >&2; die "--onnx is required"; }
[ -f "$onnx" ] || die "ONNX model $onnx does not exist"
[ -f "$keep_dtype" ] || die "keep_dtype file $keep_dtype does not exist: make it with python3 gen_cfg.py $onnx $keep_dtype"
for bs in $batch_sizes; do
  [[ "$bs" =~ ^[1-9][0-9]*$ ]] || die "batch size '$bs' is not a positive integer (--batch-sizes \"1 4 8\")"
done
if [ "$dynamic" = 1 ]; then
  gears=$(printf '%s\n' $batch_sizes | sort -n | uniq | paste -sd, -)
  count=$(printf '%s\n' $batch_sizes | sort -n | uniq | wc -l)
  [ "$count" -ge 2 ] && [ "$count" -le 100 ] \
    || die "--dynamic-batch needs 2 to 100 batch sizes (ATC's --dynamic_batch_size gears), got $count ($gears): give --batch-sizes \"1 4 8 16 32 64\", or leave out --dynamic-batch for one model per batch size"
fi
if [ "$aipp" = 0 ] && LC_ALL=C grep -qa 't2t_vit.input_dtype..uint8' "$onnx"; then
  die "$onnx is the uint8 export (it takes uint8 NHWC and normalises inside, for the CPU): give ATC the float sum export; for uint8 bins on the NPU add --aipp"
fi
command -v atc >/dev/null 2>&1 || die "atc not found on PATH: install the CANN toolkit and source its set_env.sh (e.g. . /usr/local/Ascend/ascend-toolkit/set_env.sh)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/.venv/bin/python" ]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi
shape=$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m t2t_vit.ascend.aipp --onnx "$onnx" --shape) \
  || die "could not read the input shape of $onnx (see above)"
keep_option=("--keep_dtype=$keep_dtype")
if ! grep -q '[^[:space:]]' "$keep_dtype"; then
  keep_option=()
  echo "atc: $keep_dtype names no node: nothing is kept in fp32 (--keep_dtype left out)"
fi

if [ -z "$soc" ]; then
  command -v npu-smi >/dev/null 2>&1 || die "no --soc-version given and npu-smi not found: pass --soc-version (e.g. Ascend310P3)"
  # The Name column of the first device row: "| 0     310P3     | OK ..." (header: "| NPU     Name ...").
  name=$(npu-smi info | awk -F'|' '/^\| *[0-9]+ +[A-Za-z0-9]+ /{ split($2, f, " "); print f[2]; exit }')
  [ -n "$name" ] || die "could not read the chip name from npu-smi info: pass --soc-version (e.g. Ascend310P3)"
  soc="$name"
fi
case "$soc" in Ascend*) ;; *) soc="Ascend$soc" ;; esac  # never double the prefix

mkdir -p "$out_dir"
aipp_cfg="" aipp_option=() input_dtype="float32"
if [ "$aipp" = 1 ]; then
  aipp_cfg="$out_dir/aipp.cfg"
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m t2t_vit.ascend.aipp --onnx "$onnx" --out "$aipp_cfg" \
    || die "could not write $aipp_cfg (see above)"
  aipp_option=("--insert_op_conf=$aipp_cfg")
  input_dtype="uint8"
fi
# build OUTPUT SIZE_FLAG SIZE INPUT_BATCH [EXTRA ATC OPTION...]: one atc call and its record OUTPUT.om.json, written
# by the record's one writer, python -m t2t_vit.ascend.om_record (SIZE_FLAG SIZE: --batch-size N, or
# --dynamic-batch-sizes N,N,...)
build() {
  local output="$1" size_flag="$2" size="$3" input_batch="$4"
  shift 4
  rm -f "${output}.om.json"  # the record is written again only once this build succeeded
  atc --framework=5 --model="$onnx" --output="$output" --input_format=NCHW \
      --input_shape="image:${input_batch},${shape}" --log=error --soc_version="$soc" ${keep_option[@]+"${keep_option[@]}"} \
      ${aipp_option[@]+"${aipp_option[@]}"} "$@" || die "atc failed for $(basename "$output")"
  if [ ! -f "${output}.om" ]; then
    found=$(ls "${output}"_*.om 2>/dev/null | head -n 1 || true)
    [ -n "$found" ] || die "atc finished but wrote no ${output}*.om"
    ln -sf "$(basename "$found")" "${output}.om"
    echo "atc: $found linked as ${output}.om"
  fi
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m t2t_vit.ascend.om_record --om "${output}.om" \
      --onnx "$onnx" --keep-dtype "$keep_dtype" ${aipp_cfg:+--aipp "$aipp_cfg"} --soc-version "$soc" \
      --input-shape "$shape" "$size_flag" "$size" || die "could not write the build record ${output}.om.json (see above)"
}

if [ "$dynamic" = 1 ]; then
  output="$out_dir/T2T_ViT_dyn"
  echo "atc: batch sizes $gears -> ${output}.om, one dynamic-batch model (soc $soc)"
  build "$output" --dynamic-batch-sizes "$gears" -1 --dynamic_batch_size="$gears"
  echo "built: ${output}.om (run it with ais_bench --dymBatch N, N one of $gears)"
  exit 0
fi
for bs in $batch_sizes; do
  output="$out_dir/T2T_ViT_bs${bs}"
  echo "atc: batch $bs -> ${output}.om (soc $soc)"
  build "$output" --batch-size "$bs" "$bs"
done
echo "built: $(for bs in $batch_sizes; do printf '%s ' "$out_dir/T2T_ViT_bs${bs}.om"; done)"
