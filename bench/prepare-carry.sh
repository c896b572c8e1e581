#!/bin/sh
# Packs a build's dependencies so that they can be copied to a machine with an
# NVIDIA GPU that lacks them, where bench/device-check.sh runs the GPU checks:
# the Debian 12 libraries and headers that such a machine usually lacks
# (oneDNN, jansson, cmocka, stb, libjpeg-turbo and libexif (the tools' image
# reader), oneDNN's runtime dependency libOpenCL, a pkg-config, and libgomp as a
# fallback) go into .carry/carry.tar.xz at the
# repository root (.carry/ is git-ignored), which device-check.sh unpacks.
#
# Run on the development machine (Debian 12 with libdnnl-dev, libjansson-dev,
# libcmocka-dev, libstb-dev, libjpeg-dev, libexif-dev, pkgconf installed), then copy the checkout with
# its .carry/ folder to the GPU machine (see bench/device-check.sh for the
# steps there). The archive unpacks into one prefix:
#   include/  (oneapi/dnnl, dnnl*.h, jansson*.h, cmocka*.h, stb/, j*.h, libexif/)
#   lib/      (.so files and symlinks; lib/pkgconfig/*.pc relocated with ${pcfiledir})
#   bin/      (pkgconf, used only when the machine has no pkg-config)
#   fallback/gomp (libgomp, used only when the machine has none),
#   fallback/pkgconf (libpkgconf.so.3 for bin/pkgconf)
# libdnnl.so.2 alone is ~40 MB; xz brings the archive to a fraction of that,
# quick to copy (the GPU machine used for this project takes at most 64 MiB
# with the checkout).
#
# With --gst BUILD_DIR it also writes .carry/gst.tar.xz: gst-launch-1.0, the
# GStreamer plugins the element check needs (coreelements, multifile, png,
# videoconvertscale), the captchaocr plugin from BUILD_DIR/gst (BUILD_DIR must be
# a build of this tree configured with the plugin: meson option gst, set by
# -Dgst=enabled or left at its default auto with GStreamer's development
# packages installed; e.g. build/) and every library they load except glibc's, libstdc++
# and libgcc_s, so that device-check.sh can run the element on a machine
# without GStreamer. With --data DIR it copies DIR (the captcha-v2 folder with
# train/ and test/) to .carry/data/captcha-v2 for the parity and training
# checks; the images stay out of the repository (.carry/ is git-ignored).
#
# Usage: bench/prepare-carry.sh [--gst BUILD_DIR] [--data DIR] [output-dir]
#        (default output-dir: <repo>/.carry)
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
gst_build=""
data=""
while [ $# -gt 0 ]; do
    case "$1" in
    --gst) gst_build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    -h | --help) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "prepare-carry: unknown option $1 (--help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
out=${1:-$repo/.carry}
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
libdir=/usr/lib/$multiarch
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/include" "$stage/lib/pkgconfig" "$stage/bin" "$stage/fallback/gomp" \
    "$stage/fallback/pkgconf"

need() {
    for f in "$@"; do
        if [ ! -e "$f" ]; then
            echo "prepare-carry: $f is missing (install libdnnl-dev libjansson-dev libcmocka-dev libstb-dev libjpeg-dev libexif-dev pkgconf)" >&2
            exit 1
        fi
    done
}

# Copies a shared library with its symlink chain: name.so -> name.so.N -> real file.
copy_lib() {
    for name in "$@"; do
        need "$libdir/$name"
        for link in "$libdir/$name" "$libdir/$name".*; do
            [ -e "$link" ] || continue
            cp -P "$link" "$stage/lib/"
        done
        real=$(readlink -f "$libdir/$name")
        cp "$real" "$stage/lib/"
    done
}

need /usr/include/oneapi/dnnl/dnnl.h /usr/include/jansson.h /usr/include/cmocka.h \
     /usr/include/stb/stb_image.h /usr/include/jpeglib.h /usr/include/$multiarch/jconfig.h \
     /usr/include/libexif/exif-data.h
cp -a /usr/include/oneapi "$stage/include/"
cp -a /usr/include/dnnl*.h* "$stage/include/"
cp -a /usr/include/jansson.h /usr/include/jansson_config.h /usr/include/cmocka.h \
      /usr/include/cmocka_pbc.h "$stage/include/"
cp -a /usr/include/stb "$stage/include/"
# libjpeg-turbo's jconfig.h is in the multiarch folder, which the compiler searches only on
# a machine with libjpeg-dev: next to jpeglib.h instead
cp -a /usr/include/jpeglib.h /usr/include/jmorecfg.h /usr/include/jerror.h \
      /usr/include/$multiarch/jconfig.h /usr/include/libexif "$stage/include/"

copy_lib libdnnl.so libjansson.so libcmocka.so libstb.so libjpeg.so libexif.so
# libdnnl.so.2 needs libOpenCL.so.1 (ocl-icd); libstdc++/libgcc_s are on every machine
need "$libdir/libOpenCL.so.1"
cp "$(readlink -f "$libdir/libOpenCL.so.1")" "$stage/lib/libOpenCL.so.1"
need "$libdir/libgomp.so.1"
cp "$(readlink -f "$libdir/libgomp.so.1")" "$stage/fallback/gomp/libgomp.so.1"
ln -s libgomp.so.1 "$stage/fallback/gomp/libgomp.so"

# pkg-config files, relocated: prefix = the folder above lib/pkgconfig
for pc in jansson cmocka stb libjpeg libexif; do
    need "$libdir/pkgconfig/$pc.pc"
    sed -e 's|^prefix=.*|prefix=${pcfiledir}/../..|' \
        -e 's|^libdir=.*|libdir=${prefix}/lib|' \
        -e 's|^includedir=${prefix}/include/stb|includedir=${prefix}/include/stb|' \
        -e 's|^includedir=.*/include$|includedir=${prefix}/include|' \
        -e 's|-L/usr/lib/[^ ]*|-L${pcfiledir}/..|' \
        -e 's|-I/usr/include|-I${pcfiledir}/../../include|' \
        "$libdir/pkgconfig/$pc.pc" >"$stage/lib/pkgconfig/$pc.pc"
done

# pkgconf, for a machine without pkg-config (meson's dependency() needs one)
need /usr/bin/pkgconf "$libdir/libpkgconf.so.3"
cp /usr/bin/pkgconf "$stage/bin/pkgconf"
cp "$(readlink -f "$libdir/libpkgconf.so.3")" "$stage/fallback/pkgconf/libpkgconf.so.3"

mkdir -p "$out"
rm -f "$out/carry.tar.xz"
tar -C "$stage" -cf - . | xz -T0 -3 >"$out/carry.tar.xz"
echo "prepare-carry: wrote $out/carry.tar.xz ($(du -h "$out/carry.tar.xz" | cut -f1)):"
tar -tJf "$out/carry.tar.xz" | grep -v '/$' | sed 's|^\./|  |' | grep -v '^  include/oneapi\|^  include/stb/\|^  include/libexif/' 

if [ -n "$gst_build" ]; then
    plugin=$gst_build/gst/libgstcaptcha.so
    if [ ! -e "$plugin" ]; then
        echo "prepare-carry: $plugin is missing: build $gst_build with the plugin first (meson option gst: -Dgst=enabled, or auto with GStreamer's -dev packages installed; then ninja -C $gst_build)" >&2
        exit 1
    fi
    need /usr/bin/gst-launch-1.0
    gst=$(mktemp -d)
    trap 'rm -rf "$stage" "$gst"' EXIT
    mkdir -p "$gst/bin" "$gst/lib" "$gst/plugins"
    cp /usr/bin/gst-launch-1.0 "$gst/bin/"
    cp "$plugin" "$gst/plugins/"
    for p in coreelements multifile png videoconvertscale; do
        need "$libdir/gstreamer-1.0/libgst$p.so"
        cp "$libdir/gstreamer-1.0/libgst$p.so" "$gst/plugins/"
    done
    # the libraries they load, by soname, except the C runtime every machine has
    ldd "$gst/bin/gst-launch-1.0" "$gst"/plugins/*.so | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
        sort -u | while read -r soname path; do
        case "$soname" in
        libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libstdc++.so.*|libgcc_s.so.*) ;;
        *) cp "$(readlink -f "$path")" "$gst/lib/$soname" ;;
        esac
    done
    rm -f "$out/gst.tar.xz"
    tar -C "$gst" -cf - . | xz -T0 -3 >"$out/gst.tar.xz"
    echo "prepare-carry: wrote $out/gst.tar.xz ($(du -h "$out/gst.tar.xz" | cut -f1), $(ls "$gst/lib" | wc -l) libraries)"
fi

if [ -n "$data" ]; then
    need "$data/train" "$data/test"
    rm -rf "$out/data" && mkdir -p "$out/data"
    cp -r "$data" "$out/data/captcha-v2"
    echo "prepare-carry: copied $data to $out/data/captcha-v2 ($(du -sh "$out/data" | cut -f1))"
fi
