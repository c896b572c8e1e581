#!/usr/bin/env bash
# Reproduces the bundled model, model/captcha-default.safetensors, from scratch (see
# model/captcha-default.md, the model card). Needs a build (meson setup build && ninja -C build)
# and the shared real data set.
#
#   model/make-default-model.sh [OUT.safetensors]
#
# Environment: BUILD (build directory, default build), CAPTCHA_SHARED_DATA (default
# ../shared/data next to the source tree), THREADS (default 2).
#
# Data: the 936 real training images of captcha-v2 (each copied 4 times, so the real style
# weighs about as much as the synthetic one per epoch; augmentation makes the copies differ)
# and 8000 captcha-gen images (seed 1, charset 0-9a-z, length 5). Validation, which picks the
# saved epoch: 500 other captcha-gen images (seed 2). The real test split is never seen.
# Training: captcha-train's default recipe (Adam 2e-3 with warm-up and cosine decay, weight
# decay 1e-4, seeded augmentation), seed 1: 15 epochs, then resumed from the checkpoint
# with --epochs 25 (the cosine schedule is recomputed for 25 epochs at that point, a warm
# restart of the learning rate). This is how the bundled model was made: the first run was
# planned for 15 epochs and extended once its validation accuracy was short of the goal.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
data=${CAPTCHA_SHARED_DATA:-../shared/data}/captcha-v2
out=${1:-model/captcha-default.safetensors}
threads=${THREADS:-2}
[ -d "$data/train" ] || { echo "make-default-model: $data/train not found" >&2; exit 1; }
work=$(mktemp -d /tmp/captcha-default-model.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$build/train/captcha-gen" --out "$work/train" --count 8000 --seed 1
"$build/train/captcha-gen" --out "$work/val" --count 500 --seed 2
for copy in 1 2 3 4; do
  for f in "$data"/train/*.png; do
    name=$(basename "$f" .png)
    cp "$f" "$work/train/${name}_real${copy}.png"
  done
done
echo "make-default-model: $(ls "$work/train" | wc -l) training images, $(ls "$work/val" | wc -l) validation images"
"$build/train/captcha-train" --train "$work/train" --val "$work/val" --out "$out" \
  --checkpoint "$work/checkpoint" --recipe default --epochs 15 --seed 1 --threads "$threads" \
  --charset 0123456789abcdefghijklmnopqrstuvwxyz
"$build/train/captcha-train" --train "$work/train" --val "$work/val" --out "$out" \
  --checkpoint "$work/checkpoint" --resume "$work/checkpoint" --epochs 25 --threads "$threads"
