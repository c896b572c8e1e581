#!/bin/sh
# captcha-train resume: a run stopped mid-epoch (hidden option --stop-after-steps, and a real
# SIGINT) and continued with --resume ends with a model file byte-identical to an
# uninterrupted run with the same seed; the same seed twice gives identical files, also
# with each next batch built in a second thread during the step (CAPTCHA_TRAIN_OVERLAP=1).
# Usage: test_train_resume.sh TRAIN PREDICT MAKE_IMAGES
. "$(dirname "$0")/train_test_common.sh"
make_set "$T/train" 20 4
make_set "$T/val" 6 5
# 20 images, batch 8: steps of 8, 8, 4 -> 3 steps per epoch, 9 in all
ARGS="--train $T/train --val $T/val --charset abc --input 64x32 --epochs 3 --batch 8 --threads 2 --device cpu --seed 11"

"$TRAIN" $ARGS --out "$T/a.safetensors" 2>"$T/a.log" || { cat "$T/a.log"; fail "uninterrupted run"; }
"$TRAIN" $ARGS --out "$T/a2.safetensors" 2>/dev/null || fail "second uninterrupted run"
cmp "$T/a.safetensors" "$T/a2.safetensors" || fail "same seed gave different model files"
"$TRAIN" $ARGS --out "$T/s2.safetensors" --seed 12 2>/dev/null || fail "run with another seed"
cmp -s "$T/a.safetensors" "$T/s2.safetensors" && fail "another seed gave the same model file"

# --- each next batch built in a second thread during the step (the GPU's way) ---
CAPTCHA_TRAIN_OVERLAP=1 "$TRAIN" $ARGS --out "$T/o.safetensors" 2>/dev/null ||
    fail "run with the next batch built beside the step"
cmp "$T/a.safetensors" "$T/o.safetensors" || fail "building the next batch beside the step changed the model"
CAPTCHA_TRAIN_OVERLAP=1 "$TRAIN" $ARGS --out "$T/o2.safetensors" --stop-after-steps 4 2>/dev/null
CAPTCHA_TRAIN_OVERLAP=1 "$TRAIN" $ARGS --out "$T/o2.safetensors" --resume "$T/o2.safetensors.ckpt" \
    2>/dev/null || fail "resume with the next batch built beside the step"
cmp "$T/a.safetensors" "$T/o2.safetensors" || fail "stop + resume with batches built beside the step differs"

# --- stopped mid-epoch 2 (after 4 steps), then resumed ---
"$TRAIN" $ARGS --out "$T/b.safetensors" --stop-after-steps 4 2>"$T/b.log"
rc=$?
[ $rc -eq 130 ] || { cat "$T/b.log"; fail "interrupted run exited $rc, expected 130"; }
grep -q "interrupted (signal 2) at epoch 2 step 1: checkpoint written to $T/b.safetensors.ckpt" "$T/b.log" ||
    fail "no interruption message: $(cat "$T/b.log")"
[ -s "$T/b.safetensors.ckpt" ] || fail "no checkpoint after interruption"
"$TRAIN" $ARGS --out "$T/b.safetensors" --resume "$T/b.safetensors.ckpt" 2>"$T/b2.log" ||
    { cat "$T/b2.log"; fail "resumed run"; }
grep -q "resuming at epoch 2, step 1" "$T/b2.log" || fail "resume position: $(cat "$T/b2.log")"
cmp "$T/a.safetensors" "$T/b.safetensors" || fail "stop + resume differs from the uninterrupted run"

# --- stopped twice (at step 2, then at the epoch boundary 6) with a custom --checkpoint ---
"$TRAIN" $ARGS --out "$T/c.safetensors" --checkpoint "$T/c.ckpt" --stop-after-steps 2 2>/dev/null
[ $? -eq 130 ] || fail "first stop"
"$TRAIN" $ARGS --out "$T/c.safetensors" --checkpoint "$T/c.ckpt" --resume "$T/c.ckpt" --stop-after-steps 6 2>/dev/null
[ $? -eq 130 ] || fail "second stop"
"$TRAIN" $ARGS --out "$T/c.safetensors" --checkpoint "$T/c.ckpt" --resume "$T/c.ckpt" 2>/dev/null ||
    fail "final resume"
cmp "$T/a.safetensors" "$T/c.safetensors" || fail "two stops + resumes differ from the uninterrupted run"

# --- a real SIGINT while training ---
"$TRAIN" $ARGS --out "$T/d.safetensors" 2>"$T/d.log" &
pid=$!
i=0
while ! grep -q "epoch 1/3 validation" "$T/d.log" 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
# a second run on the same checkpoint while the first one runs is refused
if kill -0 $pid 2>/dev/null; then
    "$TRAIN" $ARGS --out "$T/d2.safetensors" --checkpoint "$T/d.safetensors.ckpt" \
        --stop-after-steps 0 2>"$T/d2.log"
    rc=$?
    if kill -0 $pid 2>/dev/null; then
        [ $rc -eq 1 ] && grep -q "another captcha-train run is using this checkpoint" "$T/d2.log" ||
            fail "second run on a busy checkpoint: exit $rc, $(cat "$T/d2.log")"
    fi
fi
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
if [ $rc -eq 130 ]; then
    grep -q "interrupted (signal 2)" "$T/d.log" || fail "SIGINT: no interruption message"
    "$TRAIN" $ARGS --out "$T/d.safetensors" --resume "$T/d.safetensors.ckpt" 2>/dev/null ||
        fail "resume after SIGINT"
elif [ $rc -ne 0 ]; then
    cat "$T/d.log"
    fail "SIGINT run exited $rc"
else
    echo "note: the run finished before SIGINT arrived"
fi
cmp "$T/a.safetensors" "$T/d.safetensors" || fail "SIGINT + resume differs from the uninterrupted run"

# --- resuming with other training images is refused ---
rm "$T/train/$(ls "$T/train" | head -n 1)"
"$TRAIN" $ARGS --out "$T/e.safetensors" --resume "$T/c.ckpt" 2>"$T/e.log"
rc=$?
[ $rc -eq 1 ] || fail "resume with other images exited $rc"
grep -q "differ from those of the checkpoint $T/c.ckpt (20 images then, 19 now)" "$T/e.log" || fail "resume with other images: $(cat "$T/e.log")"

finish
