#!/bin/bash
# The GPU machine's check, in one run (under 5 minutes on 16 cores):
#   1. unpack the libraries it lacks (.carry/carry.tar.xz from bench/prepare-carry.sh),
#   2. find cuDNN / cuBLAS (the CUDA toolkit, else PyTorch's nvidia-* wheels),
#   3. meson setup -Dgst=disabled -Dcuda=enabled -Dgpu_arch=90 and build,
#   4. run test_backend_cuda and test_ops,
#   5. run the GPU benchmark when it exists (bench-gpu from bench/bench_gpu.c, which runs
#      bench/torch_gpu.py for the PyTorch side).
# Logs go to $OUT (at most 8 files come back from the device tool):
#   summary.txt, build.log, test_backend_cuda.log, test_ops.log, bench_gpu.log
#
# From the development machine:
#   bench/prepare-carry.sh       # once; writes .carry/carry.tar.xz (git-ignored)
#   device run, carry [".carry"], command "bash bench/device-check.sh", timeout_s 420
# It also runs on any machine (OUT defaults to build-device-out/); without a GPU
# test_backend_cuda reports "skipped".
set -u -o pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$repo/build-device-out}
mkdir -p "$OUT"
summary=$OUT/summary.txt
: >"$summary"
note() { echo "== $*" | tee -a "$summary"; }
started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
status=0

note "machine: $(uname -m), $(nproc) cores; $(date -u +%FT%TZ)"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
        --format=csv >>"$summary" 2>&1
else
    note "nvidia-smi not found"
fi

# ---- 1. carried libraries ----
carry=${CAPTCHA_CARRY_DIR:-/tmp/captcha-carry}
if [ -f "$repo/.carry/carry.tar.xz" ]; then
    rm -rf "$carry" && mkdir -p "$carry"
    tar -C "$carry" -xJf "$repo/.carry/carry.tar.xz" || { note "cannot unpack .carry/carry.tar.xz"; exit 1; }
    export PKG_CONFIG_PATH=$carry/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export LIBRARY_PATH=$carry/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
    export CPATH=$carry/include${CPATH:+:$CPATH}
    export LD_LIBRARY_PATH=$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    if ! command -v pkg-config >/dev/null; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/fallback/pkgconf exec %s/bin/pkgconf "$@"\n' \
            "$carry" "$carry" >"$carry/bin/pkg-config"
        chmod +x "$carry/bin/pkg-config"
        export PATH=$carry/bin:$PATH
        note "no pkg-config on the machine: using the carried pkgconf"
    fi
    if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libgomp.so.1 '; then
        export LIBRARY_PATH=$LIBRARY_PATH:$carry/fallback/gomp
        export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$carry/fallback/gomp
        note "no libgomp on the machine: using the carried one"
    fi
else
    note "no .carry/carry.tar.xz: relying on the machine's oneDNN/jansson/cmocka/stb"
fi

# ---- 2. CUDA toolkit, cuDNN, cuBLAS ----
cuda=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$cuda/bin/nvcc" ] && command -v nvcc >/dev/null; then
    cuda=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
fi
[ -x "$cuda/bin/nvcc" ] || { note "no nvcc found"; exit 1; }
note "nvcc: $("$cuda/bin/nvcc" --version | tail -1)"
# A python nvidia-* wheel's folder (nvidia.cudnn, nvidia.cublas, ...), or nothing.
wheel_dir() {
    python3 -c "import importlib, sys; m = importlib.import_module('nvidia.$1'); print(list(m.__path__)[0])" 2>/dev/null
}
meson_cuda_options=()
lib_dirs=""
if [ ! -e "$cuda/include/cudnn.h" ] || [ ! -e "$cuda/lib64/libcudnn.so" ]; then
    d=$(wheel_dir cudnn)
    [ -n "$d" ] && [ -e "$d/include/cudnn.h" ] || { note "cuDNN not found (toolkit or nvidia.cudnn wheel)"; exit 1; }
    root=/tmp/captcha-cudnn
    rm -rf "$root" && mkdir -p "$root/lib"
    ln -s "$d/include" "$root/include"
    for f in "$d"/lib/*; do ln -s "$f" "$root/lib/"; done
    [ -e "$root/lib/libcudnn.so" ] || ln -s "$(cd "$d/lib" && ls libcudnn.so.* | head -1)" "$root/lib/libcudnn.so"
    meson_cuda_options+=("-Dcudnn_dir=$root")
    lib_dirs=$root/lib
    note "cuDNN from the wheel $d ($(grep -h '#define CUDNN_M[AI][JN]OR ' "$d"/include/cudnn_version*.h | awk '{printf "%s ", $3}'))"
fi
if [ ! -e "$cuda/lib64/libcublas.so" ] || [ ! -e "$cuda/lib64/libcudart.so" ]; then
    # a toolkit view: every entry of $cuda linked, lib64 completed from the wheels
    root=/tmp/captcha-cuda
    rm -rf "$root" && mkdir -p "$root/lib64"
    for e in "$cuda"/*; do [ "$(basename "$e")" = lib64 ] || ln -s "$e" "$root/"; done
    for f in "$cuda"/lib64/*; do [ -e "$f" ] && ln -s "$f" "$root/lib64/"; done
    for w in cublas cuda_runtime; do
        d=$(wheel_dir $w) || true
        [ -n "$d" ] || continue
        for f in "$d"/lib/*.so*; do [ -e "$root/lib64/$(basename "$f")" ] || ln -s "$f" "$root/lib64/"; done
        lib_dirs=$lib_dirs:$d/lib
    done
    for n in cublas cublasLt cudart; do
        [ -e "$root/lib64/lib$n.so" ] || ln -s "$(cd "$root/lib64" && ls lib$n.so.* | head -1)" "$root/lib64/lib$n.so"
    done
    cuda=$root
    note "cuBLAS/cudart completed from the nvidia wheels into $root/lib64"
fi
meson_cuda_options+=("-Dcudatoolkit_dir=$cuda")
export LD_LIBRARY_PATH=${lib_dirs:+$lib_dirs:}$cuda/lib64:$LD_LIBRARY_PATH

# ---- 3. configure and build ----
src=$repo
if ! pkg-config --exists cairo pangocairo fontconfig 2>/dev/null && [ -e "$repo/train/captcha_gen.c" ]; then
    # train/meson.build requires cairo/pango for captcha-gen, which this machine lacks:
    # build a copy of the tree without that tool (it is not part of this check)
    src=/tmp/captcha-src
    rm -rf "$src" && mkdir -p "$src"
    tar -C "$repo" --exclude=./.git --exclude='./build*' --exclude=./.carry -cf - . | tar -C "$src" -xf -
    rm -f "$src/train/captcha_gen.c"
    note "no cairo/pango here: building a copy of the tree without train/captcha_gen.c"
fi
build=/tmp/captcha-build-device
meson=(meson)
command -v meson >/dev/null || meson=(python3 -m mesonbuild.mesonmain)
rm -rf "$build"
note "configure + build ($(elapsed) s so far)"
if ! { "${meson[@]}" setup "$build" "$src" -Dgst=disabled -Dcuda=enabled -Dgpu_arch=90 \
        -Dbuildtype=release "${meson_cuda_options[@]}" &&
       ninja -C "$build" -j"$(nproc)"; } >"$OUT/build.log" 2>&1; then
    note "BUILD FAILED (tail of build.log follows)"
    tail -40 "$OUT/build.log" | tee -a "$summary"
    exit 1
fi
grep -A4 'Features' "$OUT/build.log" >>"$summary"
note "built ($(elapsed) s so far)"

# ---- 4. tests ----
run_test() { # name, timeout
    local name=$1 limit=$2 rc
    if [ ! -x "$build/tests/$name" ]; then
        note "$name: not built"
        status=1
        return
    fi
    (cd "$build" && CAPTCHA_SOURCE_DIR=$src CAPTCHA_BUILD_DIR=$build \
        timeout "$limit" "tests/$name") >"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
    0) note "$name: PASS ($(elapsed) s so far)" ;;
    77) note "$name: SKIPPED: $(grep -m1 SKIP "$OUT/$name.log")" ;;
    124) note "$name: TIMEOUT after $limit s"; status=1 ;;
    *) note "$name: FAIL (exit $rc)"; grep -E '\[  FAILED|\[  ERROR|FAIL|exceeds|failed' "$OUT/$name.log" | head -20 | tee -a "$summary"; status=1 ;;
    esac
}
run_test test_backend_cuda 150
run_test test_ops 100

# ---- 5. benchmark ----
# bench-gpu runs bench/torch_gpu.py itself (python3 on PATH, or $CAPTCHA_PYTHON) before its
# own measurements and prints both sides with ratios; it exits 77 without a usable GPU.
if [ -x "$build/bench/bench-gpu" ]; then
    note "bench-gpu ($(elapsed) s so far)"
    timeout 110 "$build/bench/bench-gpu" >"$OUT/bench_gpu.log" 2>&1 || note "bench-gpu exit $?"
    tail -25 "$OUT/bench_gpu.log" >>"$summary"
else
    note "bench-gpu not built (no bench/bench_gpu.c)"
fi
note "done in $(elapsed) s, status $status"
exit $status
