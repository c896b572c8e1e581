#!/usr/bin/env bash
# Installs the Debian 12 packages gst-captcha needs to build, run and test.
# Used by the README's two commands (examples/demo.sh, tests/run.sh) and by CI.
set -euo pipefail
packages=(
  # build
  meson ninja-build pkg-config gcc libc6-dev
  libdnnl-dev        # oneDNN: the CPU backend's convolution / batch norm / linear
  libjansson-dev     # JSON of the safetensors header
  libstb-dev         # stb_image: PNG/BMP/GIF/... decoding by content in the tools
  libjpeg-dev        # libjpeg-turbo: JPEG decoding in the tools, as OpenCV's imread
  libexif-dev        # EXIF orientation in the tools, applied as OpenCV's imread applies it
  libcairo2-dev libpango1.0-dev libfontconfig-dev fonts-dejavu-core fonts-liberation2  # captcha-gen
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev  # the plugin
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  # tests
  libcmocka-dev
  python3 python3-torch python3-opencv python3-numpy python3-pil python3-gst-1.0
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} Debian packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
