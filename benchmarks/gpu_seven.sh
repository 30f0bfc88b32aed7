#!/usr/bin/env bash
# The follow-up's seven metrics (and the rest of `--metrics all`) at n = 1000 on the trained VGG,
# DenseNet and ViT, the three side by side on one lent GPU, each stopped cleanly before
# ${LIMIT:-480} s. The evaluation writes its records as it goes, so a stopped run resumes from them
# (on any device: the settings, not the device, fix the numbers). Each network's folder comes back
# packed as ${OUT}/<net>-seven.tgz; unpack it into media/groundtruth/ and run the same command
# again (CPU or GPU) to finish or merge.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}; work=${WORK:-/tmp/seven}; mkdir -p "$out" "$work"
python3 -c "import torch; print(torch.cuda.get_device_name(0), torch.__version__)" | tee "$out/device.txt"
for net in ${NETS:-vgg densenet vit}; do
  [ -d "media/groundtruth/$net-seven" ] && cp -r "media/groundtruth/$net-seven" "$work/"
  ( start=$(date +%s)
    timeout -s INT "${LIMIT:-480}" python3 -m pullbacks evaluate --model "groundtruth/$net" --images groundtruth:1000 \
      --methods pullback gradient integrated_gradients integrated_pullbacks edge centre --metrics all \
      --mosaics 200 --device cuda --out "$work/$net-seven" --no-progress > "$work/$net.log" 2>&1
    echo "$net: exit $? after $(( $(date +%s) - start )) s" >> "$work/$net.log" ) &
done
wait
for net in ${NETS:-vgg densenet vit}; do
  tail -3 "$work/$net.log"; cat "$work/$net-seven"/records/*.jsonl 2>/dev/null | wc -l
  tar czf "$out/$net-seven.tgz" -C "$work" "$net-seven" "$net.log"
done
ls -la "$out"
