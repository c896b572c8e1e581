#!/bin/sh
# captcha-train / captcha-predict edge cases found by testing: files that would overwrite each
# other, resuming a finished run, directories, FIFOs and devices where a file is expected,
# option values out of range, file names the folder readers skip or that break the output.
# Usage: test_train_edge.sh TRAIN PREDICT MAKE_IMAGES
. "$(dirname "$0")/train_test_common.sh"
# expect STATUS PATTERN command...: runs the command (killed after 30 s: a FIFO must not make it
# wait), checks its exit status and that stderr holds PATTERN (grep -E) after the program name.
expect() {
    want=$1
    pattern=$2
    shift 2
    timeout 30 "$@" >"$T/out.txt" 2>"$T/err.txt" </dev/null
    rc=$?
    [ $rc -eq "$want" ] || fail "$*: exit $rc, expected $want; stderr: $(cat "$T/err.txt")"
    grep -Eq "^captcha-(train|predict): .*$pattern" "$T/err.txt" ||
        fail "$*: stderr lacks /$pattern/: $(cat "$T/err.txt")"
}
# no_training: the last expect's run did not train
no_training() {
    grep -q "epoch 1/" "$T/err.txt" && fail "$1: trained before refusing"
}
# epoch_of FILE: the "epoch" metadata of a model file (its safetensors header is JSON text)
epoch_of() {
    head -c 4096 "$1" | tr -d '\000' | grep -ao '"epoch":"[0-9]*"' | tr -dc '0-9'
}
C="--input 64x32 --batch 4 --threads 2 --device cpu"
COMMON="$C --epochs 1 --charset abc"
INIT="--batch 4 --threads 2 --device cpu --epochs 1"
make_set "$T/good" 8 1
make_set "$T/val" 4 2
first=$(ls "$T/good" | head -n 1)
"$TRAIN" --train "$T/good" --out "$T/m1.st" $COMMON 2>/dev/null || fail "training m1"
printf 'precious' >"$T/precious.st"

# --- 1. --out, the checkpoint and --init/--resume naming one file: usage error, nothing trained ---
expect 2 "--out and the checkpoint .*are the same file" \
    "$TRAIN" --train "$T/good" --out "$T/precious.st" --checkpoint "$T/precious.st" $COMMON
no_training "--out = --checkpoint"
[ "$(cat "$T/precious.st")" = precious ] || fail "--out = --checkpoint changed the file"
# (in a subshell: its failures are passed back through its exit status)
(cd "$T" && expect 2 "are the same file" \
    "$TRAIN" --train good --out ./new.st --checkpoint new.st $COMMON
exit $FAILS) || fail "relative --out and --checkpoint naming one file"
ln -s m1.st "$T/link.st"
expect 2 "the checkpoint and --init .*are the same file" \
    "$TRAIN" --train "$T/good" --out "$T/i.st" --init "$T/m1.st" --checkpoint "$T/link.st" $INIT
expect 2 "--out and --resume .*are the same file" \
    "$TRAIN" --train "$T/good" --out "$T/m1.st.ckpt" --resume "$T/m1.st.ckpt" $COMMON
cmp -s "$T/m1.st" "$T/link.st" || fail "m1.st changed"

# --- 2. resuming a finished run writes --out and says which epoch it holds ---
expect 0 "$T/r0.st holds the last epoch, 1" \
    "$TRAIN" --train "$T/good" --out "$T/r0.st" --resume "$T/m1.st.ckpt" $COMMON
cmp -s "$T/m1.st" "$T/r0.st" || fail "resuming a finished run: --out differs from the run's model"
expect 2 "--epochs 1: the checkpoint .* has done 2 epoch" sh -c \
    "'$TRAIN' --train '$T/good' --out '$T/m2.st' $C --charset abc --epochs 2 2>/dev/null &&
     '$TRAIN' --train '$T/good' --out '$T/r1.st' --resume '$T/m2.st.ckpt' $COMMON"
[ -e "$T/r1.st" ] && fail "--epochs below the checkpoint's wrote a model"
# with --val: a new --out gets the last epoch when no epoch of this run is better; the message
# names the epoch the file holds
"$TRAIN" --train "$T/good" --val "$T/val" --out "$T/v1.st" $COMMON 2>/dev/null || fail "v1"
for epochs in 1 3; do
    expect 0 "done" "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/v$epochs.new.st" \
        --resume "$T/v1.st.ckpt" $C --epochs $epochs
    [ -s "$T/v$epochs.new.st" ] || fail "resume --epochs $epochs with --val: --out not written"
    said=$(sed -n "s/.*v$epochs.new.st holds [^0-9]*\([0-9][0-9]*\).*/\1/p" "$T/err.txt" | tail -n 1)
    [ -n "$said" ] && [ "$said" = "$(epoch_of "$T/v$epochs.new.st")" ] ||
        fail "resume --epochs $epochs: says epoch '$said', file holds $(epoch_of "$T/v$epochs.new.st"): $(cat "$T/err.txt")"
done

# the checkpoint keeps the best epoch on --val: resuming the finished run of 3 epochs into
# another --out writes the very model the run left in its own
"$TRAIN" --train "$T/good" --val "$T/val" --out "$T/b3.st" $C --charset abc --epochs 3 \
    2>"$T/err.txt" || fail "b3: $(cat "$T/err.txt")"
expect 0 "$T/b3.copy.st holds epoch $(epoch_of "$T/b3.st")" \
    "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/b3.copy.st" --resume "$T/b3.st.ckpt" $C
cmp -s "$T/b3.st" "$T/b3.copy.st" ||
    fail "resuming a finished run with --val: --out differs from the run's own (epoch $(epoch_of "$T/b3.st") vs $(epoch_of "$T/b3.copy.st"))"

# --- 3. --out or the checkpoint naming a directory: refused before training ---
mkdir "$T/outdir"
expect 1 "--out $T/outdir cannot be written: .*directory" \
    "$TRAIN" --train "$T/good" --out "$T/outdir" $COMMON
no_training "--out DIR"
expect 1 "checkpoint $T/outdir cannot be written: .*directory" \
    "$TRAIN" --train "$T/good" --out "$T/d.st" --checkpoint "$T/outdir" $COMMON
no_training "--checkpoint DIR"

# --- 4. a rate that overflows a float ---
expect 2 "--lr: expected" "$TRAIN" --train "$T/good" --out "$T/x.st" --lr 1e39 $INIT
expect 2 "--weight-decay: expected" "$TRAIN" --train "$T/good" --out "$T/x.st" --weight-decay 1e39 $INIT

# --- 5. --charset auto with a label character no charset may hold: names the file ---
mkdir "$T/space" "$T/utf8"
cp "$T"/good/* "$T/space/"
cp "$T"/good/* "$T/utf8/"
cp "$T/good/$first" "$T/space/a .png"
cp "$T/good/$first" "$T/utf8/$(printf '\303\244').png"
expect 1 "$T/space/a .png: label \"a \": .*byte 0x20" \
    "$TRAIN" --train "$T/space" --out "$T/x.st" $C --epochs 1 --charset auto
expect 1 "$T/utf8/$(printf '\303\244').png: label .*byte 0xc3" \
    "$TRAIN" --train "$T/utf8" --out "$T/x.st" $C --epochs 1 --charset auto
# a 2-letter label with a 2-byte letter is reported as not ASCII, not as too long
mkdir "$T/utf8b"
cp "$T"/good/* "$T/utf8b/"
cp "$T/good/$first" "$T/utf8b/b$(printf '\303\244').png"
expect 1 "label \"b$(printf '\303\244')\": byte 0xc3 \(position 2\) is not ASCII" \
    "$TRAIN" --train "$T/utf8b" --out "$T/x.st" $COMMON

# --- 6. entries a folder reader leaves out are named; failures are counted ---
# A hidden file and a subfolder are ignored by design (a note, not counted, so a
# .gitkeep does not fail captcha-predict); a broken link and a FIFO count as skipped.
mkdir "$T/dots" "$T/dots/sub"
cp "$T"/good/* "$T/dots/"
cp "$T/good/$first" "$T/dots/.ab.png"
ln -s nowhere.png "$T/dots/bc.png"
mkfifo "$T/dots/ca.png"
expect 0 "2 file\(s\) of $T/dots skipped" "$TRAIN" --train "$T/dots" --out "$T/x.st" $COMMON
check_dots() { # $1: tool name for messages
    for f in .ab.png sub; do
        grep -q "note: ignoring $T/dots/$f" "$T/err.txt" || fail "$1: $f not named: $(cat "$T/err.txt")"
    done
    for f in bc.png ca.png; do
        grep -q "warning: skipping $T/dots/$f" "$T/err.txt" || fail "$1: $f not named: $(cat "$T/err.txt")"
    done
}
check_dots train
expect 1 "2 file\(s\) skipped" "$PREDICT" --model "$T/m1.st" --threads 2 --device cpu "$T/dots"
check_dots predict
[ "$(wc -l <"$T/out.txt")" -eq 9 ] || fail "predict: expected 8 results + accuracy: $(cat "$T/out.txt")"
rm "$T/dots/bc.png" "$T/dots/ca.png"
expect 0 "note: ignoring $T/dots/.ab.png" "$PREDICT" --model "$T/m1.st" --threads 2 --device cpu "$T/dots"

# --- 7. --input beyond what a model may have ---
expect 2 "--input: .*4096" "$TRAIN" --train "$T/good" --out "$T/x.st" --input 8192x32 $INIT --charset abc

# --- 8. FIFOs and devices where a file is read: refused, no waiting ---
mkfifo "$T/ff"
expect 1 "$T/ff: .*not a regular file" "$PREDICT" --model "$T/ff" "$T/good"
expect 1 "--init: $T/ff: .*not a regular file" "$TRAIN" --train "$T/good" --out "$T/x.st" --init "$T/ff" $INIT
expect 1 "$T/ff: .*not a regular file" "$TRAIN" --train "$T/good" --out "$T/x.st" --resume "$T/ff" $COMMON
expect 1 "skipping $T/ff: .*not a regular file" "$PREDICT" --model "$T/m1.st" --device cpu "$T/ff" "$T/good/$first"
expect 1 "skipping /dev/zero: .*not a regular file" "$PREDICT" --model "$T/m1.st" --device cpu /dev/zero
expect 1 "/dev/zero: .*not a regular file" "$PREDICT" --model /dev/zero "$T/good"

# --- 9. a run whose weights overflow although its loss stays finite: exit 1, nothing written ---
expect 1 "training diverged in epoch 1: tensor .*element [0-9]* is -?nan" \
    "$TRAIN" --train "$T/good" --out "$T/nan.st" $COMMON --lr 1e20
[ -e "$T/nan.st" ] && fail "a diverged run wrote --out"
[ -e "$T/nan.st.ckpt" ] && fail "a diverged run wrote a checkpoint"

# --- 10. --out = --init, and --out or the checkpoint naming a training image: refused ---
cp "$T/m1.st" "$T/ft.st"
expect 2 "--out and --init are the same file" \
    "$TRAIN" --train "$T/good" --init "$T/ft.st" --out "$T/ft.st" $INIT
no_training "--out = --init"
cmp -s "$T/m1.st" "$T/ft.st" || fail "--out = --init changed the model"
cp "$T/good/$first" "$T/image.bak"
expect 2 "--out $T/good/$first is an image of --train" \
    "$TRAIN" --train "$T/good" --out "$T/good/$first" $COMMON
expect 2 "the checkpoint $T/good/$first is an image of --train" \
    "$TRAIN" --train "$T/good" --out "$T/x.st" --checkpoint "$T/good/$first" $COMMON
valfirst=$(ls "$T/val" | head -n 1)
expect 2 "--out $T/val/$valfirst is an image of --val" \
    "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/val/$valfirst" $COMMON
no_training "--out = a --val image"
cmp -s "$T/good/$first" "$T/image.bak" || fail "a training image was replaced"
# an image named like the temporary file an output is written through (PATH.tmp)
mkdir "$T/tmpname"
cp "$T"/good/* "$T/tmpname/"
mv "$T/tmpname/$first" "$T/tmpname/${first%.png}.tmp"
expect 2 "--out $T/tmpname/${first%.png} is written through $T/tmpname/${first%.png}.tmp, an image of --train" \
    "$TRAIN" --train "$T/tmpname" --out "$T/tmpname/${first%.png}" $COMMON
expect 2 "the checkpoint $T/tmpname/${first%.png} is written through .*an image of --train" \
    "$TRAIN" --train "$T/tmpname" --out "$T/x.st" --checkpoint "$T/tmpname/${first%.png}" $COMMON
cmp -s "$T/tmpname/${first%.png}.tmp" "$T/image.bak" || fail "an image named PATH.tmp was replaced"

# --- 11. --input with --resume: ignored with a warning naming the checkpoint's ---
expect 0 "warning: --input 128x32 ignored: resuming with the checkpoint's input 64x32" \
    "$TRAIN" --train "$T/good" --out "$T/ri.st" --resume "$T/m1.st.ckpt" $COMMON --input 128x32

# options a checkpoint fixes: the warning names those given with another value, and the CPU
# threads when they differ from the run's (the weights then differ in their last bits)
expect 0 "warning: --batch --seed ignored: resuming with the checkpoint's values \\(batch 4" \
    "$TRAIN" --train "$T/good" --out "$T/rb.st" --resume "$T/m1.st.ckpt" --input 64x32 --batch 3 \
    --device cpu --threads 2 --seed 9
grep -q "CPU thread" "$T/err.txt" && fail "a threads warning with the run's threads: $(cat "$T/err.txt")"
# a --batch above the image count ran at the image count: the same --batch again is no change
"$TRAIN" --train "$T/good" --out "$T/bc.st" $C --batch 16 --charset abc --epochs 1 2>/dev/null ||
    fail "training with --batch above the image count"
"$TRAIN" --train "$T/good" --out "$T/bc2.st" --resume "$T/bc.st.ckpt" $C --batch 16 2>"$T/err.txt" ||
    fail "resuming with --batch 16: $(cat "$T/err.txt")"
grep -q "ignored" "$T/err.txt" && fail "the run's own --batch reported as ignored: $(cat "$T/err.txt")"
expect 0 "warning: --batch ignored: resuming with the checkpoint's values \\(batch 8" \
    "$TRAIN" --train "$T/good" --out "$T/bc3.st" --resume "$T/bc.st.ckpt" $C --batch 5
expect 0 "warning: $T/m1.st.ckpt ran with 2 CPU threads, this run with 1" \
    "$TRAIN" --train "$T/good" --out "$T/rb.st" --resume "$T/m1.st.ckpt" --device cpu --threads 1

# --- 12. --val overlapping --train (here the same folder): trained, with a warning ---
expect 0 "warning: 8 of the 8 --val images are also in --train" \
    "$TRAIN" --train "$T/good" --val "$T/good" --out "$T/ov.st" $COMMON
mkdir "$T/partval"
cp "$T/val"/* "$T/partval/"
cp "$T/good/$first" "$T/partval/"
expect 0 "warning: 1 of the 5 --val images are also in --train .*partval/$first and $T/good/$first" \
    "$TRAIN" --train "$T/good" --val "$T/partval" --out "$T/ov.st" $COMMON
expect 0 "done" "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/ov.st" $COMMON
grep -q "also in --train" "$T/err.txt" && fail "disjoint --val reported as overlapping"

# --- 13. outputs are written through PATH.tmp: no PATH.tmp may be another file of the run ---
cp "$T/m1.st" "$T/w.st.tmp"
cp "$T/m1.st.ckpt" "$T/r.tmp"
printf 'precious' >"$T/a.tmp"
expect 2 "--out $T/t.st is written through $T/t.st.tmp, which is the checkpoint" \
    "$TRAIN" --train "$T/good" --out "$T/t.st" --checkpoint "$T/t.st.tmp" $COMMON
expect 2 "--out $T/w.st is written through $T/w.st.tmp, which is --init" \
    "$TRAIN" --train "$T/good" --init "$T/w.st.tmp" --out "$T/w.st" $INIT
expect 2 "--out $T/r is written through $T/r.tmp, which is --resume" \
    "$TRAIN" --train "$T/good" --resume "$T/r.tmp" --out "$T/r" $COMMON
expect 2 "the checkpoint $T/a is written through $T/a.tmp, which is --out" \
    "$TRAIN" --train "$T/good" --out "$T/a.tmp" --checkpoint "$T/a" $COMMON
cmp -s "$T/m1.st" "$T/w.st.tmp" && cmp -s "$T/m1.st.ckpt" "$T/r.tmp" &&
    [ "$(cat "$T/a.tmp")" = precious ] || fail "a file named like an output's PATH.tmp changed"

# --- 14. a new run (no --resume) never replaces an unfinished checkpoint, nor a file that is
# no checkpoint; the interrupted run prints the whole command that continues it ---
expect 130 "continue with:" "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/u.st" $C \
    --charset abc --epochs 3 --stop-after-steps 3
resume_line=$(grep -A1 "continue with:" "$T/err.txt" | tail -n 1)
cp "$T/u.st.ckpt" "$T/u.ckpt.bak"
expect 2 "the checkpoint $T/u.st.ckpt holds an unfinished run \\(1 of 3 epochs done, and part of the next\\): .*--resume $T/u.st.ckpt" \
    "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/u.st" $C --charset abc --epochs 3
no_training "a new run over an unfinished checkpoint"
cmp -s "$T/u.st.ckpt" "$T/u.ckpt.bak" || fail "a new run changed an unfinished checkpoint"
printf 'notes' >"$T/notes.txt"
expect 2 "the checkpoint $T/notes.txt exists and is not a captcha-train checkpoint" \
    "$TRAIN" --train "$T/good" --out "$T/n.st" --checkpoint "$T/notes.txt" $COMMON
[ "$(cat "$T/notes.txt")" = notes ] || fail "a file at the checkpoint's path was replaced"
# the run chose its best epoch on --val (epoch 1 is done): resuming without --val is refused
expect 2 "the run kept its best epoch on --val \\(epoch 1," \
    "$TRAIN" --train "$T/good" --out "$T/u.st" --resume "$T/u.st.ckpt" $C
cmp -s "$T/u.st.ckpt" "$T/u.ckpt.bak" || fail "a refused resume changed the checkpoint"
case $resume_line in
"  $TRAIN --train $T/good --val $T/val --out $T/u.st --resume $T/u.st.ckpt --epochs 3 --device cpu --threads 2") ;;
*) fail "the interrupted run's resume command: '$resume_line'" ;;
esac
# --val must be the run's: another folder, or none for a run without one, is refused
expect 2 "the run validates on 4 image\\(s\\), --val $T/good holds 8 with other labels" \
    "$TRAIN" --train "$T/good" --val "$T/good" --out "$T/u.st" --resume "$T/u.st.ckpt" $C
expect 2 "the run had no --val; resume it without --val" \
    "$TRAIN" --train "$T/good" --val "$T/val" --out "$T/nv.st" --resume "$T/m1.st.ckpt" $C
# a resumed run must not write its checkpoint over another run's unfinished one
expect 2 "the checkpoint $T/u.st.ckpt holds an unfinished run" \
    "$TRAIN" --train "$T/good" --out "$T/u.st" --resume "$T/m1.st.ckpt" $C
cmp -s "$T/u.st.ckpt" "$T/u.ckpt.bak" || fail "a refused resume changed the checkpoint"
# the printed command, as printed, continues the run, identical to an uninterrupted one
expect 0 "done" sh -c "${resume_line#  }"
"$TRAIN" --train "$T/good" --val "$T/val" --out "$T/whole.st" $C --charset abc --epochs 3 \
    2>/dev/null || fail "uninterrupted run of the resumed one"
cmp -s "$T/u.st" "$T/whole.st" || fail "the printed resume command gave another model"

# --- 16. the checkpoint's lock file (CHECKPOINT.lock, removed at the end) is no other file ---
expect 2 "the checkpoint $T/lk.ckpt has the lock file $T/lk.ckpt.lock, which is --out" \
    "$TRAIN" --train "$T/good" --out "$T/lk.ckpt.lock" --checkpoint "$T/lk.ckpt" $COMMON
cp "$T/m1.st" "$T/lk2.lock"
expect 2 "the checkpoint $T/lk2 has the lock file $T/lk2.lock, which is --init" \
    "$TRAIN" --train "$T/good" --init "$T/lk2.lock" --out "$T/lk2.st" --checkpoint "$T/lk2" $INIT
printf 'notes' >"$T/lk3.ckpt.lock"
expect 2 "$T/lk3.ckpt.lock exists and is not a captcha-train lock file" \
    "$TRAIN" --train "$T/good" --out "$T/lk3.st" --checkpoint "$T/lk3.ckpt" $COMMON
cmp -s "$T/m1.st" "$T/lk2.lock" && [ "$(cat "$T/lk3.ckpt.lock")" = notes ] ||
    fail "a file named like the checkpoint's lock changed"

# --- 17. damaged checkpoints: the message says what is wrong, before reading gigabytes ---
: >"$T/empty.ckpt"
expect 1 "$T/empty.ckpt: not a captcha-train checkpoint \\(shorter than" \
    "$TRAIN" --train "$T/good" --out "$T/e.st" --resume "$T/empty.ckpt" $COMMON
head -c 10 "$T/m1.st.ckpt" >"$T/short.ckpt"
expect 1 "$T/short.ckpt: truncated checkpoint" \
    "$TRAIN" --train "$T/good" --out "$T/e.st" --resume "$T/short.ckpt" $COMMON
# the parameter count (after the header fields) made huge: refused by the file's size
python3 - "$T/m1.st.ckpt" "$T/huge.ckpt" <<'PY' || fail "making huge.ckpt"
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
# magic 8, version 4, charset 129, 3 int32, channel order 4, mean/std 8, recipe 5 int32 +
# 2 float + seed 8, image count and label hash 16, epoch/step/best 12, adam/batches 16,
# best accuracy 8, v2: best chars 8, best batches 8, val count/hash 16, threads 4, loss sum 8,
# steps 8
offset = 8 + 4 + 129 + 12 + 4 + 8 + 20 + 8 + 8 + 16 + 12 + 16 + 8 + 8 + 8 + 16 + 4 + 8 + 8
struct.pack_into("<q", data, offset, 1 << 27)
open(sys.argv[2], "wb").write(data)
PY
expect 1 "$T/huge.ckpt: truncated or corrupt checkpoint \\(134217728 parameters" \
    "$TRAIN" --train "$T/good" --out "$T/e.st" --resume "$T/huge.ckpt" $COMMON

[ "$(epoch_of "$T/u.st")" -ge 1 ] || fail "the resumed run wrote no model"

# --- 15. more threads than cores: a warning (they take turns, each step many times slower) ---
cores=$(getconf _NPROCESSORS_ONLN)
expect 0 "warning: --threads $((cores + 1)) is more than the $cores core" \
    "$PREDICT" --model "$T/m1.st" --device cpu --threads $((cores + 1)) "$T/good"

# --- minor ones ---
expect 2 "--seed: expected" "$TRAIN" --train "$T/good" --out "$T/x.st" --seed " -5" $INIT
expect 2 "--seed: expected" "$TRAIN" --train "$T/good" --out "$T/x.st" --seed " 5" $INIT
expect 1 "$T/outdir: .*not a regular file" "$TRAIN" --train "$T/good" --out "$T/x.st" --resume "$T/outdir" $COMMON
expect 2 "--model: the path is empty" "$PREDICT" --model "" "$T/good"
# a PNG header of 20000x20000 RGB: refused from its header (over 2^26 pixels); the message
# gives the size
mkdir "$T/big"
printf '\211PNG\r\n\032\n\000\000\000\015IHDR\000\000N \000\000N \010\002\000\000\000\000\000\000\000' \
    >"$T/big/ab.png"
expect 1 "skipping $T/big/ab.png: .*too large.*20000x20000" "$PREDICT" --model "$T/m1.st" --device cpu "$T/big/ab.png"
# a JPEG whose frame header (SOF0) claims 9000x9000 over a few hundred bytes of data: refused
# from the header (81 Mpixel > 2^26), before the decoder allocates and fills 243 MB for it
jpeg=$(for f in "$T"/good/*; do [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' ')" = ffd8 ] && echo "$f" && break; done)
[ -n "$jpeg" ] || fail "make_images wrote no JPEG"
sof=$(LC_ALL=C grep -obUaP '\xff\xc0' "$jpeg" | head -n 1 | cut -d: -f1)
[ -n "$sof" ] || fail "no SOF0 marker in $jpeg"
cp "$jpeg" "$T/big/bomb.png"
printf '\043\050\043\050' | dd of="$T/big/bomb.png" bs=1 seek=$((sof + 5)) conv=notrunc 2>/dev/null
expect 1 "skipping $T/big/bomb.png: too large: 9000x9000 pixels \(the tools decode at most 67108864" \
    "$PREDICT" --model "$T/m1.st" --device cpu "$T/big/bomb.png"
# a JPEG cut short, even by its end-of-image marker alone, is refused as truncated (libjpeg
# cannot tell that cut from one inside the data); bytes after that marker are accepted
mkdir "$T/cut"
size=$(wc -c <"$jpeg")
head -c $((size - 2)) "$jpeg" >"$T/cut/ab.png"
expect 1 "skipping $T/cut/ab.png: cannot decode: truncated" "$PREDICT" --model "$T/m1.st" --device cpu "$T/cut/ab.png"
{ cat "$jpeg"; printf 'trailing bytes'; } >"$T/cut/ba.png"
"$PREDICT" --model "$T/m1.st" --device cpu "$T/cut/ba.png" >"$T/out.txt" 2>"$T/err.txt" ||
    fail "a JPEG with bytes after its end-of-image marker: $(cat "$T/err.txt")"
# a tab, a newline and a backslash in a file name: escaped in PATH<TAB>TEXT<TAB>CONFIDENCE
mkdir "$T/names"
cp "$T/good/$first" "$T/names/a$(printf '\t')b.png"
cp "$T/good/$first" "$T/names/b
c.png"
cp "$T/good/$first" "$T/names/c\\a.png"
"$PREDICT" --model "$T/m1.st" --device cpu "$T/names" >"$T/out.txt" 2>"$T/err.txt" || fail "predict names: $(cat "$T/err.txt")"
# (the labels "a\tb", "b\nc" and "c\\a" are not of the model's length: no accuracy line)
[ "$(wc -l <"$T/out.txt")" -eq 3 ] || fail "predict names: expected 3 results: $(cat "$T/out.txt")"
awk -F '\t' 'NF != 3 { exit 1 }' "$T/out.txt" || fail "predict names: lines without 3 fields: $(cat "$T/out.txt")"
grep -qF "$T/names/a\\tb.png	" "$T/out.txt" || fail "tab not escaped: $(cat "$T/out.txt")"
grep -qF "$T/names/b\\nc.png	" "$T/out.txt" || fail "newline not escaped: $(cat "$T/out.txt")"
grep -qF "$T/names/c\\\\a.png	" "$T/out.txt" || fail "backslash not escaped: $(cat "$T/out.txt")"
"$PREDICT" --help | grep -q 'escaped' || fail "--help does not say how paths are escaped"

# --- control bytes of file names in messages are escaped: one line each, no terminal codes ---
mkdir "$T/esc"
printf 'x' >"$T/esc/$(printf 'a\033[31mb')x.png"
printf 'x' >"$T/esc/$(printf 'c\nd')x.png"
# U+009B in UTF-8: CSI, ESC [ to xterm and VTE
printf 'x' >"$T/esc/$(printf 'e\302\23331mf')x.png"
"$PREDICT" --model "$T/m1.st" --device cpu "$T/esc" >/dev/null 2>"$T/err.txt"
grep -qF 'a\x1b[31mbx.png' "$T/err.txt" || fail "ESC not escaped: $(cat -v "$T/err.txt")"
grep -qF 'c\ndx.png' "$T/err.txt" || fail "newline not escaped: $(cat -v "$T/err.txt")"
grep -qF 'e\xc2\x9b31mfx.png' "$T/err.txt" || fail "U+009B not escaped: $(cat -v "$T/err.txt")"
grep -q "$(printf '\033')" "$T/err.txt" && fail "an ESC byte reached stderr: $(cat -v "$T/err.txt")"
[ "$(grep -c 'warning: skipping' "$T/err.txt")" -eq 3 ] || fail "expected 3 one-line warnings: $(cat -v "$T/err.txt")"
"$TRAIN" --train "$T/esc" --out "$T/esc.st" $COMMON 2>"$T/err.txt"
grep -qF 'a\x1b[31mbx.png' "$T/err.txt" || fail "captcha-train: ESC not escaped: $(cat -v "$T/err.txt")"

# --- a symbolic link at an output's PATH.tmp is replaced, never written through ---
printf 'precious' >"$T/victim"
ln -s "$T/victim" "$T/sl.st.tmp"
ln -s "$T/victim" "$T/sl.st.ckpt.tmp"
"$TRAIN" --train "$T/good" --out "$T/sl.st" $COMMON 2>"$T/err.txt" || fail "links at .tmp: $(cat "$T/err.txt")"
[ "$(cat "$T/victim")" = precious ] || fail "a link at PATH.tmp was written through"
[ -f "$T/sl.st" ] && [ ! -L "$T/sl.st" ] && [ -f "$T/sl.st.ckpt" ] && [ ! -L "$T/sl.st.ckpt" ] ||
    fail "the outputs are not regular files beside the links"

# --- progress off a terminal: plain lines every --progress seconds within an epoch ---
# (stderr is a file here; 8 images at batch 4 are 2 steps an epoch: a line after the first
# step of each epoch, none after the last, whose epoch summary follows)
"$TRAIN" --train "$T/good" --out "$T/p.st" $C --charset abc --epochs 2 --progress 0.000001 \
    2>"$T/err.txt" || fail "--progress: $(cat "$T/err.txt")"
[ "$(grep -c '^captcha-train: epoch [12]/2 step 1/2 loss [0-9.]* [0-9.]* img/s ETA [0-9]' \
    "$T/err.txt")" -eq 2 ] || fail "--progress: expected 2 step lines: $(cat "$T/err.txt")"
grep -q 'step 2/2' "$T/err.txt" && fail "--progress: a line after an epoch's last step"
grep -q "$(printf '[\r\033]')" "$T/err.txt" && fail "--progress: terminal control bytes in a log"
"$TRAIN" --train "$T/good" --out "$T/p0.st" $COMMON --progress 0 2>"$T/err.txt" ||
    fail "--progress 0: $(cat "$T/err.txt")"
grep -q ' step ' "$T/err.txt" && fail "--progress 0 printed step lines: $(cat "$T/err.txt")"
# the default (60 s) prints none in a run of seconds
"$TRAIN" --train "$T/good" --out "$T/p1.st" $COMMON 2>"$T/err.txt" || fail "default progress"
grep -q ' step ' "$T/err.txt" && fail "a step line within 60 s: $(cat "$T/err.txt")"
expect 2 "--progress: expected a number" "$TRAIN" --train "$T/good" --out "$T/x.st" --progress -1 $COMMON
expect 2 "--progress: expected a number" "$TRAIN" --train "$T/good" --out "$T/x.st" --progress 5s $COMMON

finish
