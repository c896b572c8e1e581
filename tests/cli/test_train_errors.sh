#!/bin/sh
# captcha-train / captcha-predict on bad input: each case checks the exit status (1 runtime,
# 2 usage), that the message names the offending file/character/path, and that an existing
# --out file survives a failed run.
# Usage: test_train_errors.sh TRAIN PREDICT MAKE_IMAGES
. "$(dirname "$0")/train_test_common.sh"
# expect STATUS PATTERN command...: runs the command, checks its exit status and that stderr
# holds PATTERN (grep -E) prefixed by the program name.
expect() {
    want=$1
    pattern=$2
    shift 2
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    rc=$?
    [ $rc -eq "$want" ] || fail "$*: exit $rc, expected $want; stderr: $(cat "$T/err.txt")"
    grep -Eq "^captcha-(train|predict): .*$pattern" "$T/err.txt" ||
        fail "$*: stderr lacks /$pattern/: $(cat "$T/err.txt")"
}
COMMON="--input 64x32 --epochs 1 --batch 4 --threads 2 --device cpu --charset abc"
make_set "$T/good" 8 1
printf 'precious' >"$T/existing.safetensors"

# --- usage errors: exit 2 ---
expect 2 "--train DIR is required" "$TRAIN" --out "$T/x"
expect 2 "--out FILE is required" "$TRAIN" --train "$T/good"
expect 2 "--input: expected WIDTHxHEIGHT" "$TRAIN" --train "$T/good" --out "$T/x" --input 100x30
expect 2 "--input: expected WIDTHxHEIGHT" "$TRAIN" --train "$T/good" --out "$T/x" --input "64x+32"
expect 2 "--input: expected WIDTHxHEIGHT" "$TRAIN" --train "$T/good" --out "$T/x" --input " 64x32"
expect 2 "--recipe: expected default or reference" "$TRAIN" --train "$T/good" --out "$T/x" --recipe fast
expect 2 "--batch: expected an integer" "$TRAIN" --train "$T/good" --out "$T/x" --batch 1
# numbers as captcha-gen and the model metadata take them: no white space, '+' or hex
expect 2 "--batch: expected an integer" "$TRAIN" --train "$T/good" --out "$T/x" --batch " 3"
expect 2 "--batch: expected an integer" "$PREDICT" --batch +3 "$T/good"
expect 2 "--lr: expected a number" "$TRAIN" --train "$T/good" --out "$T/x" --lr 0x1p-7
expect 2 "--lr: expected a number" "$TRAIN" --train "$T/good" --out "$T/x" --lr " 1e-3"
expect 2 "--device" "$TRAIN" --train "$T/good" --out "$T/x" --device tpu
expect 2 "unknown option" "$TRAIN" --train "$T/good" --out "$T/x" --bogus
# the refused option is named, also inside a group of short options (not the program's path)
expect 2 "option -x needs a value or is unknown" "$TRAIN" --threads=2 -xy --train "$T/good" --out "$T/x"
expect 2 "unknown option or missing value: -x \\(see" "$PREDICT" --threads=2 -xy "$T/good"
expect 2 "unknown option or missing value: -q \\(see" "$PREDICT" -q "$T/good"
expect 2 "unknown option or missing value: --bogus=1 \\(see" "$PREDICT" --bogus=1 "$T/good"
expect 2 "unknown option or missing value: --model \\(see" "$PREDICT" "$T/good" --model
# without --model: $CAPTCHA_MODEL, else the bundled model (as the element)
expect 1 "cannot load the model: $T/none.st \\(from .CAPTCHA_MODEL\\)" \
    env CAPTCHA_MODEL="$T/none.st" "$PREDICT" --device cpu "$T/good"
env -u CAPTCHA_MODEL "$PREDICT" --device cpu "$T/good" >"$T/out.txt" 2>"$T/err.txt" ||
    fail "captcha-predict without --model: exit $?: $(cat "$T/err.txt")"
[ "$(cut -f1 "$T/out.txt" | wc -l)" -eq 8 ] ||
    fail "captcha-predict without --model read $(wc -l <"$T/out.txt") of 8 images"
[ "$(cut -f2 "$T/out.txt" | tr -d 'a-z0-9\n' | wc -c)" -eq 0 ] &&
    [ "$(cut -f2 "$T/out.txt" | awk '{ print length($0) }' | sort -u)" = 5 ] ||
    fail "captcha-predict without --model: not the bundled 5-character model's texts: $(cat "$T/out.txt")"
expect 2 "no image or folder given" "$PREDICT" --model "$T/x"

expect 2 "--init and --resume exclude each other" "$TRAIN" --train "$T/good" --out "$T/x" --init "$T/x" --resume "$T/y"
expect 2 "--charset/--input cannot be combined with --init" "$TRAIN" --train "$T/good" --out "$T/x" --init "$T/x" --charset abc
# --- --init from a file that is not a model ---
expect 1 "--init: .*$T/existing.safetensors" "$TRAIN" --train "$T/good" --out "$T/x" --init "$T/existing.safetensors" --epochs 1 --threads 2 --device cpu

# --- empty folder ---
mkdir "$T/empty"
expect 1 "$T/empty: no readable image" "$TRAIN" --train "$T/empty" --out "$T/existing.safetensors" $COMMON
# --- missing folder ---
expect 1 "$T/missing: cannot read the folder" "$TRAIN" --train "$T/missing" --out "$T/x" $COMMON

# --- truncated image and non-image file: skipped with a warning each, counted, training goes on ---
mkdir "$T/mixed"
cp "$T"/good/* "$T/mixed/"
first=$(ls "$T/good" | head -n 1)
head -c 60 "$T/good/$first" >"$T/mixed/ab_trunc.png"
printf 'not an image\n' >"$T/mixed/notes.txt"
"$TRAIN" --train "$T/mixed" --out "$T/mixed.safetensors" $COMMON 2>"$T/err.txt"
rc=$?
[ $rc -eq 0 ] || fail "training with skipped files exited $rc: $(cat "$T/err.txt")"
grep -q "warning: skipping $T/mixed/ab_trunc.png: cannot decode" "$T/err.txt" || fail "truncated image not named"
grep -q "warning: skipping $T/mixed/notes.txt: cannot decode" "$T/err.txt" || fail "non-image file not named"
grep -q "2 file(s) of $T/mixed skipped" "$T/err.txt" || fail "skipped files not counted"
grep -q "^captcha-train: 8 training images" "$T/err.txt" || fail "expected 8 training images"
# --- an image wider than the preprocessing takes (stb decodes it): skipped when the folder is
# read, not counted as a training image that stops the run at the first batch holding it ---
mkdir "$T/wide"
cp "$T"/good/* "$T/wide/"
"$MAKE" --gray 70000 1 "$T/wide/ab_wide.png" || fail "make_images --gray"
"$TRAIN" --train "$T/wide" --out "$T/wide.safetensors" $COMMON 2>"$T/err.txt" ||
    fail "training with a too wide image exited $?: $(cat "$T/err.txt")"
grep -q "warning: skipping $T/wide/ab_wide.png: image size is 70000x1, expected width and height in 1..65536" "$T/err.txt" ||
    fail "too wide image not skipped when read: $(cat "$T/err.txt")"
grep -q "^captcha-train: 8 training images" "$T/err.txt" || fail "too wide image counted: $(cat "$T/err.txt")"
# --- a PNG chunk type starting with a 0 byte (stb_image's reason is then ""): a reason given ---
"$MAKE" --gray 8 8 "$T/chunk.png" || fail "make_images --gray"
printf '\000' | dd of="$T/chunk.png" bs=1 seek=37 conv=notrunc 2>/dev/null # IDAT -> \0DAT
expect 1 "warning: skipping $T/chunk.png: cannot decode: unknown reason" "$PREDICT" --model "$T/mixed.safetensors" "$T/chunk.png"
printf 'I\000' | dd of="$T/chunk.png" bs=1 seek=37 conv=notrunc 2>/dev/null # -> I\0AT: reason "I"
expect 1 "warning: skipping $T/chunk.png: cannot decode: unknown reason" "$PREDICT" --model "$T/mixed.safetensors" "$T/chunk.png"

# --- a label character outside the charset: names the file and the character ---
mkdir "$T/badchar"
cp "$T"/good/* "$T/badchar/"
cp "$T/good/$first" "$T/badchar/aZ_1.png"
expect 1 "$T/badchar/aZ_1.png: label \"aZ\": character 'Z'.*not in the charset \"abc\" \(--charset auto takes the labels' own characters\)" \
    "$TRAIN" --train "$T/badchar" --out "$T/existing.safetensors" $COMMON
# --- labels of different lengths: names two files ---
mkdir "$T/badlen"
cp "$T"/good/* "$T/badlen/"
cp "$T/good/$first" "$T/badlen/ccc.png"
expect 1 "different lengths: .*$T/badlen/.*has 2 characters.*$T/badlen/ccc.png has 3" \
    "$TRAIN" --train "$T/badlen" --out "$T/existing.safetensors" $COMMON
# --- a --val folder whose labels do not fit the model ---
mkdir "$T/badval"
cp "$T/good/$first" "$T/badval/abca.png"
expect 1 "--val: $T/badval/abca.png: label \"abca\" has 4 characters, the model reads 2" \
    "$TRAIN" --train "$T/good" --val "$T/badval" --out "$T/existing.safetensors" $COMMON
mkdir "$T/badvalchar"
cp "$T/good/$first" "$T/badvalchar/cd.png"
expect 1 "--val: $T/badvalchar/cd.png: label \"cd\": character 'd'" \
    "$TRAIN" --train "$T/good" --val "$T/badvalchar" --out "$T/existing.safetensors" $COMMON
# --- unwritable --out: detected before training, names the path ---
expect 1 "--out $T/nodir/m.safetensors cannot be written" \
    "$TRAIN" --train "$T/good" --out "$T/nodir/m.safetensors" $COMMON
grep -q "epoch 1/1" "$T/err.txt" && fail "trained although --out is unwritable"
if [ "$(id -u)" -ne 0 ]; then
    mkdir "$T/readonly"
    chmod a-w "$T/readonly"
    expect 1 "--out $T/readonly/m.safetensors cannot be written" \
        "$TRAIN" --train "$T/good" --out "$T/readonly/m.safetensors" $COMMON
fi
# --- none of the failed runs touched the existing --out file ---
[ "$(cat "$T/existing.safetensors")" = "precious" ] || fail "a failed run changed the existing --out"
ls "$T"/existing.safetensors.* >/dev/null 2>&1 && fail "a failed run left files next to --out"

# --- a model that fails to load: the loader's reason, exit 1 ---
expect 1 "cannot load the model: .*$T/existing.safetensors" "$PREDICT" --model "$T/existing.safetensors" "$T/good"
expect 1 "cannot load the model: .*$T/none.safetensors" "$PREDICT" --model "$T/none.safetensors" "$T/good"
head -c 2000 "$T/mixed.safetensors" >"$T/truncated.safetensors"
expect 1 "cannot load the model: .*$T/truncated.safetensors" "$PREDICT" --model "$T/truncated.safetensors" "$T/good"
[ -s "$T/out.txt" ] && fail "predict printed results without a model"

# --- predict: an unreadable image is reported and skipped, the others are read, exit 1 ---
expect 1 "warning: skipping $T/mixed/ab_trunc.png: cannot decode" "$PREDICT" --model "$T/mixed.safetensors" "$T/mixed"
[ "$(grep -c "$(printf '\t')" "$T/out.txt")" -eq 8 ] || fail "expected 8 results from the mixed folder: $(cat "$T/out.txt")"
grep -q "2 file(s) skipped" "$T/err.txt" || fail "predict does not count skipped files"
expect 1 "warning: skipping $T/nofile.png: cannot open" "$PREDICT" --model "$T/mixed.safetensors" "$T/nofile.png" "$T/good/$first"
[ "$(wc -l <"$T/out.txt")" -eq 2 ] || fail "expected one result + accuracy line: $(cat "$T/out.txt")"
# --- predict on a folder with no files: says so, exit 1 ---
mkdir "$T/empty"
expect 1 "no image could be read: the folder\(s\) given hold no files" "$PREDICT" --model "$T/mixed.safetensors" "$T/empty"

# --- resume from a truncated checkpoint ---
head -c 5000 "$T/mixed.safetensors.ckpt" >"$T/truncated.ckpt"
expect 1 "$T/truncated.ckpt: truncated or corrupt checkpoint" "$TRAIN" --train "$T/mixed" --out "$T/r.safetensors" --resume "$T/truncated.ckpt" $COMMON
# --- resume from something that is not a checkpoint ---
expect 1 "not a captcha-train checkpoint" "$TRAIN" --train "$T/good" --out "$T/r.safetensors" --resume "$T/existing.safetensors" $COMMON
# --- a model given to --resume, a checkpoint given to --init: each names the other option ---
"$TRAIN" --train "$T/good" --out "$T/m1.safetensors" $COMMON 2>/dev/null || fail "training the small model"
expect 1 "a model file\? start from one with --init" "$TRAIN" --train "$T/good" --out "$T/r.safetensors" --resume "$T/m1.safetensors" $COMMON
expect 1 "--init: $T/m1.safetensors.ckpt is a captcha-train checkpoint, not a model file: continue it with --resume" "$TRAIN" --train "$T/good" --out "$T/r.safetensors" --init "$T/m1.safetensors.ckpt" --epochs 1 --threads 2 --device cpu

finish
