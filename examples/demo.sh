#!/usr/bin/env bash
# The main job, from a fresh clone (the README's first command):
#  1. installs the Debian packages (.ci/install-deps.sh) and builds into build/;
#  2. generates 12 sample captchas with a fixed seed (captcha-gen --seed 2024) and reads each
#     with a gst-launch-1.0 pipeline ending in captchaocr, using the bundled model
#     (model/captcha-default.safetensors), printing the decoded text next to the truth;
#  3. reads one of them placed at an offset in a 1280x720 BGRx "screen" through the roi-*
#     properties;
#  4. when the shared real data set is next to the checkout (../shared/data, or the folder
#     $CAPTCHA_SHARED_DATA names), reads its test split too and prints the accuracy; else
#     says that it skipped that part.
set -euo pipefail
case "${1:-}" in
-h|--help)
    awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
    exit 0 ;;
"") ;;
*) echo "demo.sh takes no arguments (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
root=$(pwd)
.ci/install-deps.sh
if [ -f build/build.ninja ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
ninja -C build >/dev/null
echo "built: $(ls build/gst/libgstcaptcha.so) (bundled model: model/captcha-default.safetensors)"
export GST_PLUGIN_PATH=$root/build/gst

samples=$root/build/demo-samples
rm -rf "$samples"
build/train/captcha-gen --out "$samples" --count 12 --seed 2024 >/dev/null

echo
echo "Sample captchas read by: fdsrc ! decodebin ! videoconvert ! imagefreeze ! captchaocr ! fakesink"
printf '%-8s %-8s %-10s %s\n' truth read confidence ""
right=0
total=0
while IFS=$'\t' read -r path text confidence; do
  truth=$(basename "$path" .png)
  truth=${truth%%_*}
  mark="ok"
  [ "$text" = "$truth" ] && right=$((right + 1)) || mark="MISS"
  total=$((total + 1))
  printf '%-8s %-8s %-10s %s\n' "$truth" "$text" "$confidence" "$mark"
done < <(examples/recognize-files.sh "$samples")
echo "$right of $total read correctly"

echo
first=$(ls "$samples"/*.png | head -n 1)
echo "The first sample composited at 400,300 into a 1280x720 BGRx frame, read through roi-*:"
examples/screen-capture.sh "$first"

real=${CAPTCHA_SHARED_DATA:-$root/../shared/data}/captcha-v2/test
if [ -d "$real" ]; then
  echo
  echo "The shared real test split ($real):"
  examples/recognize-files.sh "$real" | awk -F'\t' '
    { n++; split($1, parts, "/"); name = parts[length(parts)]; sub(/\.png$/, "", name);
      if ($2 == name) ok++ }
    END { printf "%d of %d read correctly (%.1f%%)\n", ok, n, 100 * ok / n }'
else
  echo
  echo "Skipped the shared real test split: $real is absent" \
    "(set CAPTCHA_SHARED_DATA=/path/to/data, the folder holding captcha-v2/, to read it)."
fi
