#!/usr/bin/env bash
# Stage 4 on the Ascend host: ONNX -> one offline model T2T_ViT_bs<N>.om per batch size, with ATC.
#
#   bash T2T_ViT_atc.sh --onnx T2T_ViT_14.onnx [--soc-version Ascend310P3] [--batch-sizes "1 4 8 16 32 64"]
#                       [--keep-dtype keep_dtype.cfg] [--out-dir .]
#
# Runs, per batch size:
#   atc --framework=5 --model=ONNX --output=OUT_DIR/T2T_ViT_bs${bs} --input_format=NCHW
#       --input_shape="image:${bs},3,224,224" --log=error --soc_version=SOC --keep_dtype=CFG
# The soc version is "Ascend" + the Name column of `npu-smi info` (310P3 -> Ascend310P3) unless given.
# ATC writes T2T_ViT_bs${bs}.om, or T2T_ViT_bs${bs}_<os>_<arch>.om on some versions: either is found,
# and the second is linked as T2T_ViT_bs${bs}.om. keep_dtype.cfg comes from gen_cfg.py.
# Beside each .om it writes T2T_ViT_bs${bs}.om.json: the SHA-256 of the ONNX, keep_dtype.cfg and .om, so
# that T2T_ViT_eval.sh runs an .om only when it was built from that run's own export.
set -euo pipefail

onnx="" soc="" batch_sizes="1 4 8 16 32 64" keep_dtype="keep_dtype.cfg" out_dir="."

usage() { sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
die() { echo "error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --onnx) onnx="${2:-}"; shift 2 ;;
    --soc-version) soc="${2:-}"; shift 2 ;;
    --batch-sizes) batch_sizes="${2:-}"; shift 2 ;;
    --keep-dtype) keep_dtype="${2:-}"; shift 2 ;;
    --out-dir) out_dir="${2:-}"; shift 2 ;;
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
command -v atc >/dev/null 2>&1 || die "atc not found on PATH: install the CANN toolkit and source its set_env.sh (e.g. . /usr/local/Ascend/ascend-toolkit/set_env.sh)"

if [ -z "$soc" ]; then
  command -v npu-smi >/dev/null 2>&1 || die "no --soc-version given and npu-smi not found: pass --soc-version (e.g. Ascend310P3)"
  # The Name column of the first device row: "| 0     310P3     | OK ..." (header: "| NPU     Name ...").
  name=$(npu-smi info | awk -F'|' '/^\| *[0-9]+ +[A-Za-z0-9]+ /{ split($2, f, " "); print f[2]; exit }')
  [ -n "$name" ] || die "could not read the chip name from npu-smi info: pass --soc-version (e.g. Ascend310P3)"
  soc="$name"
fi
case "$soc" in Ascend*) ;; *) soc="Ascend$soc" ;; esac  # never double the prefix

mkdir -p "$out_dir"
for bs in $batch_sizes; do
  output="$out_dir/T2T_ViT_bs${bs}"
  echo "atc: batch $bs -> ${output}.om (soc $soc)"
  rm -f "${output}.om.json"  # the record is written again only once this build succeeded
  atc --framework=5 --model="$onnx" --output="$output" --input_format=NCHW \
      --input_shape="image:${bs},3,224,224" --log=error --soc_version="$soc" --keep_dtype="$keep_dtype" \
    || die "atc failed for batch $bs"
  if [ ! -f "${output}.om" ]; then
    found=$(ls "${output}"_*.om 2>/dev/null | head -n 1 || true)
    [ -n "$found" ] || die "atc finished but wrote no ${output}*.om"
    ln -sf "$(basename "$found")" "${output}.om"
    echo "atc: $found linked as ${output}.om"
  fi
  record="${output}.om.json"
  printf '{"onnx": %s, "onnx_sha256": "%s", "keep_dtype": %s, "keep_dtype_sha256": "%s", "om_sha256": "%s", "soc_version": %s, "batch_size": %s}\n' \
    "$(json_string "$onnx")" "$(sha256 "$onnx")" "$(json_string "$keep_dtype")" "$(sha256 "$keep_dtype")" \
    "$(sha256 "${output}.om")" "$(json_string "$soc")" "$bs" > "${record}.partial"
  mv "${record}.partial" "$record"
done
echo "built: $(for bs in $batch_sizes; do printf '%s ' "$out_dir/T2T_ViT_bs${bs}.om"; done)"
