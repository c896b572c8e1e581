#!/bin/bash
# Runs the GPU checks, in one run (under 5 minutes on 16 cores), on a machine with an
# NVIDIA GPU (its driver and the CUDA toolkit; cuDNN and cuBLAS from the toolkit or from
# PyTorch's nvidia-* wheels) that may lack the Debian packages the build needs:
# bench/prepare-carry.sh packs those on the development machine into .carry/ (git-ignored),
# which is copied to the GPU machine along with the checkout. The steps:
#   1. unpack the libraries the machine lacks (.carry/carry.tar.xz, when present),
#   2. find cuDNN / cuBLAS (the CUDA toolkit, else PyTorch's nvidia-* wheels),
#   3. meson setup -Dgst=disabled -Dcuda=enabled -Dgpu_arch=90 and build,
#   4. run test_backend_cuda, again under compute-sanitizer memcheck, and test_ops,
#   5. parity on the real test split (.carry/data/captcha-v2, else $CAPTCHA_SHARED_DATA/captcha-v2,
#      else ../shared/data/captcha-v2):
#      captcha-predict --device cpu against --device cuda (batch 1 and 32), and, when
#      .carry/gst.tar.xz is there, the captchaocr element with device=cpu against device=cuda
#      (one gst-launch-1.0 pipeline over the 104 images each),
#   6. run the GPU benchmark (bench-gpu from bench/bench_gpu.c, which runs
#      bench/torch_gpu.py for the PyTorch side), and ours again with CAPTCHA_CUDA_VERBOSE=1,
#   7. train with the default recipe on the GPU (captcha-train --device cuda, real train
#      split, test split as --val), then read the test split with the result.
# Logs go to the folder $OUT (default build-device-out/ in the checkout), eight files, so
# that they are easy to copy back:
#   summary.txt, build.log, test_backend_cuda.log, sanitizer.log, test_ops.log, parity.log,
#   bench_gpu.log, train.log
#
# Step by step:
#   # on the development machine (Debian 12, with the packages of .ci/install-deps.sh), in
#   # the checkout; --gst takes a build folder configured with the GStreamer plugin (meson
#   # option gst: -Dgst=enabled, or the default auto with GStreamer installed), e.g. build/
#   bench/prepare-carry.sh --gst build --data ../shared/data/captcha-v2
#       # writes .carry/: carry.tar.xz, gst.tar.xz, data/
#   # copy the checkout, .carry/ included, to the GPU machine; there, in the copy:
#   OUT=/tmp/device-out bash bench/device-check.sh
#   # then read /tmp/device-out/summary.txt (exit status 0 when every check passed)
# It also runs on any machine, .carry/ or not; without a GPU test_backend_cuda reports
# "skipped".
# bash bench/device-check.sh --profile instead builds the same way, then lists the GPU time of
# each kernel (ncu) of one batch-1 inference from host pixels, one batch-256 inference and one
# training step at batch 16, and the algorithm chosen for each convolution
# (CAPTCHA_CUDA_VERBOSE=1): $OUT/summary.txt, build.log, profile.log, algorithms.log.
set -u -o pipefail
mode=check
case ${1:-} in
--profile) mode=profile ;;
-h | --help)
    # this header, up to `set`
    sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
"") ;;
*)
    echo "$0: unknown argument \"$1\" (--profile or --help)" >&2
    exit 2
    ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$repo/build-device-out}
mkdir -p "$OUT"
summary=$OUT/summary.txt
: >"$summary"
note() { echo "== $*" | tee -a "$summary"; }
started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
# seconds since $1 (a `date +%s%N`), with 3 decimals
since() { local ns=$(($(date +%s%N) - $1)); printf '%d.%03d' $((ns / 1000000000)) $((ns / 1000000 % 1000)); }
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
    note "no .carry/carry.tar.xz: relying on the machine's oneDNN/jansson/cmocka/stb/libjpeg/libexif"
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
    # CUDA 12 wheels: nvidia/cublas/lib, nvidia/cuda_runtime/lib; CUDA 13: nvidia/cu13/lib
    for w in cublas cuda_runtime cu13; do
        d=$(wheel_dir $w) || true
        [ -n "$d" ] || continue
        for f in "$d"/lib/*.so*; do [ -e "$root/lib64/$(basename "$f")" ] || ln -s "$f" "$root/lib64/"; done
        lib_dirs=$lib_dirs:$d/lib
    done
    for n in cublas cublasLt cudart; do
        [ -e "$root/lib64/lib$n.so" ] && continue
        f=$(cd "$root/lib64" && ls lib$n.so.* 2>/dev/null | head -1)
        if [ -n "$f" ]; then ln -s "$f" "$root/lib64/lib$n.so"; else note "lib$n.so not found (toolkit or wheels)"; fi
    done
    cuda=$root
    note "cuBLAS/cudart completed from the nvidia wheels into $root/lib64 (from ${lib_dirs#:})"
fi
meson_cuda_options+=("-Dcudatoolkit_dir=$cuda")
export LD_LIBRARY_PATH=${lib_dirs:+$lib_dirs:}$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

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

if [ $mode = profile ]; then
    bench=$build/bench/bench-gpu
    CAPTCHA_CUDA_VERBOSE=1 timeout 60 "$bench" --no-torch --quick >"$OUT/algorithms.log" 2>&1
    grep -E 'stage|median|256|epoch' "$OUT/algorithms.log" | tee -a "$summary"
    ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    if [ -z "$ncu" ]; then
        note "no ncu: no per-kernel times"
        exit 1
    fi
    for what in "--profile 1" "--profile 256" "--profile-train"; do
        note "ncu bench-gpu $what ($(elapsed) s so far)"
        timeout 120 "$ncu" --profile-from-start off --clock-control none --csv --print-units base \
            --metrics gpu__time_duration.sum "$bench" $what >/tmp/captcha-ncu.csv 2>>"$OUT/profile.log"
        echo "ncu exit $?" >>"$OUT/profile.log"
        python3 "$src/bench/kernel_times.py" /tmp/captcha-ncu.csv "bench-gpu $what" >>"$OUT/profile.log" 2>&1
        grep -A12 -- '-- by kernel' "$OUT/profile.log" | tail -13 >>"$summary"
        grep '^== bench-gpu' "$OUT/profile.log" | tail -1 | tee -a "$summary"
    done
    note "done in $(elapsed) s"
    exit 0
fi

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
run_test test_backend_cuda 120
if [ -x "$build/tests/test_backend_cuda" ] && command -v compute-sanitizer >/dev/null &&
    ! grep -q 'test_backend_cuda: SKIPPED' "$summary"; then
    # out-of-bounds and misaligned accesses (initcheck is not run: it flags cuDNN's own
    # uninitialized scratch inside cudnnFind* and takes minutes)
    note "test_backend_cuda under compute-sanitizer memcheck ($(elapsed) s so far)"
    (cd "$build" && CAPTCHA_SOURCE_DIR=$src CAPTCHA_BUILD_DIR=$build \
        timeout 90 compute-sanitizer --tool memcheck --print-limit 30 tests/test_backend_cuda) \
        >"$OUT/sanitizer.log" 2>&1
    echo "=== memcheck exit $?" >>"$OUT/sanitizer.log"
    grep -E 'ERROR SUMMARY|FAILED  \]|^=== .* exit' "$OUT/sanitizer.log" | tee -a "$summary"
fi
run_test test_ops 100

# ---- 5. parity on the real test split: CPU against CUDA, tools and element ----
data=""
for d in "$repo/.carry/data/captcha-v2" ${CAPTCHA_SHARED_DATA:+"$CAPTCHA_SHARED_DATA/captcha-v2"} \
    "$repo/../shared/data/captcha-v2"; do
    if [ -d "$d/test" ] && [ -d "$d/train" ]; then data=$d; break; fi
done
model=$src/model/captcha-default.safetensors
export CAPTCHA_CUDA_MODULE=$build/model/libcaptcha-cuda.so
# compare A B: the number of differing texts and the largest confidence difference of two
# PATH<TAB>TEXT<TAB>CONFIDENCE listings in the same order
compare() {
    paste <(grep -v '^accuracy:' "$1") <(grep -v '^accuracy:' "$2") | awk -F'\t' '{n++; if ($2 != $5) d++;
        c = $3 - $6; if (c < 0) c = -c; if (c > m) m = c}
        END {printf "%d images, %d texts differ, max |confidence difference| %.4f\n", n, d, m}'
}
parity_log=$OUT/parity.log
if [ -z "$data" ]; then
    note "parity: no captcha-v2 data (.carry/data, \$CAPTCHA_SHARED_DATA or ../shared/data): skipped"
elif [ ! -x "$build/train/captcha-predict" ]; then
    note "parity: captcha-predict not built"; status=1
else
    note "parity on $(ls "$data/test" | wc -l) test images ($(elapsed) s so far)"
    predict=$build/train/captcha-predict
    for run in "cpu 1" "cuda 1" "cuda 32"; do
        set -- $run
        echo "--- captcha-predict --device $1 --batch $2" >>"$parity_log"
        t0=$(date +%s%N)
        timeout 60 "$predict" --model "$model" --device "$1" --batch "$2" "$data/test" \
            >"/tmp/captcha-predict-$1-$2.txt" 2>>"$parity_log"
        echo "predict --device $1 --batch $2: exit $?, $(since $t0) s, $(tail -1 "/tmp/captcha-predict-$1-$2.txt")" |
            tee -a "$parity_log" >>"$summary"
    done
    for run in "cuda 1" "cuda 32"; do
        set -- $run
        echo "predict cpu/1 against $1/$2: $(compare /tmp/captcha-predict-cpu-1.txt "/tmp/captcha-predict-$1-$2.txt")" |
            tee -a "$parity_log" >>"$summary"
    done
    if [ -f "$repo/.carry/gst.tar.xz" ]; then
        gst=/tmp/captcha-gst
        rm -rf "$gst" /tmp/captcha-seq && mkdir -p "$gst" /tmp/captcha-seq
        tar -C "$gst" -xJf "$repo/.carry/gst.tar.xz"
        # multifilesrc reads numbered files: link the sorted test images as 000.png, 001.png, ...
        i=0
        for f in $(ls "$data/test"/*.png | LC_ALL=C sort); do
            ln -s "$f" "/tmp/captcha-seq/$(printf %03d $i).png"
            basename "$f" .png >>/tmp/captcha-seq/labels
            i=$((i + 1))
        done
        for dev in cpu cuda; do
            echo "--- element, device=$dev" >>"$parity_log"
            t0=$(date +%s%N)
            env LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$gst/lib" GST_REGISTRY_FORK=no \
                GST_PLUGIN_SYSTEM_PATH_1_0="$gst/plugins" GST_PLUGIN_PATH_1_0= \
                GST_REGISTRY_1_0="$gst/registry-$dev.bin" \
                timeout 60 "$gst/bin/gst-launch-1.0" -m multifilesrc location=/tmp/captcha-seq/%03d.png \
                index=0 stop-index=$((i - 1)) caps=image/png,framerate=30/1 ! pngdec ! videoconvert ! \
                captchaocr device=$dev model="$model" ! fakesink >"/tmp/captcha-element-$dev.log" 2>&1
            rc=$?
            grep '(element): captcha,' "/tmp/captcha-element-$dev.log" |
                sed -n 's/.*text\\=\\(string\\)\([^\\]*\)\\,\\ confidence\\=\\(double\\)\([^\\]*\)\\,.*/\1\t\2/p' |
                awk -F'\t' '{printf "%d\t%s\t%.4f\n", NR - 1, $1, $2}' >"/tmp/captcha-element-$dev.txt"
            right=$(cut -f2 "/tmp/captcha-element-$dev.txt" | paste - /tmp/captcha-seq/labels | awk '$1 == $2' | wc -l)
            echo "element device=$dev: exit $rc, $(since $t0) s, $(wc -l <"/tmp/captcha-element-$dev.txt") results, $right of $i equal to the label" |
                tee -a "$parity_log" >>"$summary"
            grep -E 'ERROR|WARN|CRITICAL|captcha.*(fall|CUDA)' "/tmp/captcha-element-$dev.log" | head -10 |
                tee -a "$parity_log" >>"$summary"
        done
        echo "element cpu against cuda: $(compare /tmp/captcha-element-cpu.txt /tmp/captcha-element-cuda.txt)" |
            tee -a "$parity_log" >>"$summary"
        # and the element's texts against captcha-predict's on the CPU
        echo "element cpu against captcha-predict cpu/1: $(compare /tmp/captcha-element-cpu.txt /tmp/captcha-predict-cpu-1.txt)" |
            tee -a "$parity_log" >>"$summary"
    else
        note "element: no .carry/gst.tar.xz (bench/prepare-carry.sh --gst BUILD): skipped"
    fi
fi

# ---- 6. benchmark ----
# bench-gpu runs bench/torch_gpu.py itself (python3 on PATH, or $CAPTCHA_PYTHON) before its
# own measurements and prints both sides with ratios; it exits 77 without a usable GPU.
if [ -x "$build/bench/bench-gpu" ]; then
    note "bench-gpu ($(elapsed) s so far)"
    timeout 110 "$build/bench/bench-gpu" >"$OUT/bench_gpu.log" 2>&1 || note "bench-gpu exit $?"
    tail -25 "$OUT/bench_gpu.log" >>"$summary"
    # ours only again, reporting each convolution's choice (cuDNN or im2col + GEMM, times)
    echo "=== CAPTCHA_CUDA_VERBOSE=1, ours only" >>"$OUT/bench_gpu.log"
    CAPTCHA_CUDA_VERBOSE=1 timeout 60 "$build/bench/bench-gpu" --no-torch --quick \
        >>"$OUT/bench_gpu.log" 2>&1 || note "bench-gpu (verbose) exit $?"
    grep -E '^=== CAPTCHA_CUDA_VERBOSE|captcha-cuda: conv N=(1|256) ' "$OUT/bench_gpu.log" >>"$summary"
    # and with one stream (no shortcut beside conv1)
    echo "=== CAPTCHA_CUDA_BRANCHES=0, ours only" >>"$OUT/bench_gpu.log"
    CAPTCHA_CUDA_BRANCHES=0 timeout 60 "$build/bench/bench-gpu" --no-torch --quick \
        >>"$OUT/bench_gpu.log" 2>&1 || note "bench-gpu (one stream) exit $?"
    sed -n '/^=== CAPTCHA_CUDA_BRANCHES=0/,$p' "$OUT/bench_gpu.log" | grep -E '^===|stage|median|256 forward' >>"$summary"
else
    note "bench-gpu not built (no bench/bench_gpu.c)"
fi

# ---- 7. training on the GPU, default recipe, real data ----
if [ -n "$data" ] && [ -x "$build/train/captcha-train" ]; then
    note "captcha-train --device cuda, default recipe ($(elapsed) s so far)"
    t0=$(date +%s%N)
    timeout 120 "$build/train/captcha-train" --device cuda --train "$data/train" --val "$data/test" \
        --out /tmp/captcha-gpu-trained.safetensors >"$OUT/train.log" 2>&1
    rc=$?
    echo "train: exit $rc after $(since $t0) s" | tee -a "$summary"
    grep -i -E 'epoch' "$OUT/train.log" | tail -4 >>"$summary"
    if [ -f /tmp/captcha-gpu-trained.safetensors ]; then
        "$build/train/captcha-predict" --model /tmp/captcha-gpu-trained.safetensors --device cuda \
            "$data/test" 2>&1 | tail -1 | sed 's/^/trained on the GPU, test split: /' | tee -a "$summary"
    fi
fi
note "done in $(elapsed) s, status $status"
exit $status
