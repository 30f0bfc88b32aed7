#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md in one run, for a machine with CUDA (no internet needed: random
# weights). Writes everything under ${OUT:-out/gpu}; about 6 minutes on one recent GPU (not yet run: no GPU was lent).
#
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" | tee "$out/device.txt"
# the allowlist's CUDA-only entry (the cuDNN batch norm node), proved on the device
python -m pytest -q -p no:cacheprovider tests/test_allowlist.py -k cudnn | tee "$out/allowlist.txt"
# the step table: batch 1, 8 and 64 (time; peak memory is the CPU's RSS probe, so skipped here)
python benchmarks/step.py --device cuda --batch 1 8 64 --models resnet50 vgg11_bn densenet121 convnext_tiny vit_b_16 \
    --repeats 9 --warmup 3 --no-memory | tee "$out/step.md"
# the per-call overhead table at batch 1: empty mode, pullbacks, module swap
python benchmarks/overhead.py --device cuda --repeats 15 | tee "$out/overhead.md"
# the notebook's ResNet50 grid end to end on CUDA (random weights: the machine has no internet)
pullbacks grid --model resnet50 --weights random --device cuda --images builtin --out "$out/grid" --no-progress \
    | tee "$out/grid.txt"
# the known-answers evaluation (EVALUATION.md): every method and metric on 32 generated images, timed,
# to size a full n = 1000 run per trained network on this device
methods=pullback,pullback_ascent,gradient,gradient_ascent,input_x_gradient,integrated_gradients,integrated_pullbacks,smoothgrad,smooth_pullback,guided_backprop,gradcam,guided_gradcam,guided_pullback_cam,edge,random,centre
{ time pullbacks evaluate --model groundtruth/resnet --images groundtruth:32 --methods "$methods" --metrics all \
    --mosaics 8 --device cuda --out "$out/groundtruth-resnet" --no-progress ; } 2>&1 | tail -5 | tee "$out/groundtruth.txt"
