#!/usr/bin/env bash
# The main job: every stage for a list of batch sizes, ending with accuracy and images/s tables.
# All of it is T2T_ViT_eval.py over t2t_vit/job/ (run with --help for the options); this script finds the Python.
#
#   bash T2T_ViT_eval.sh --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir /data/imagenet/val
#   bash T2T_ViT_eval.sh --demo
#
# It uses .venv/bin/python beside it, or $PYTHON.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/.venv/bin/python" ]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$here/T2T_ViT_eval.py" "$@"
