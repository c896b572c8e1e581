#!/bin/bash
# model/make-default-model.sh without its 3-hour run: --help and bad arguments, and a signal
# to the script alone while a tool runs: the script stops the tool, waits for it, removes its
# temporary folder and exits 130 (it removed the folder while the trainer still wrote into it,
# and a --help was taken as the output file and started the whole run).
# Usage: test_make_default_model.sh PATH/TO/captcha-gen   (the build folder is two levels up)
set -u
GEN=${1:?usage: $0 PATH/TO/captcha-gen}
SRC=${CAPTCHA_SOURCE_DIR:?CAPTCHA_SOURCE_DIR is not set}
SCRIPT=$SRC/model/make-default-model.sh
BUILD=$(cd "$(dirname "$GEN")/.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

"$SCRIPT" --help >"$T/help" 2>&1 || fail "--help exited $?"
grep -q 'Usage\|make-default-model.sh \[OUT.safetensors\]' "$T/help" || fail "--help: $(head -n 3 "$T/help")"
grep -q '^set -euo' "$T/help" && fail "--help printed code"
"$SCRIPT" --bogus >/dev/null 2>"$T/err"
[ $? -eq 2 ] && grep -q 'unknown option --bogus' "$T/err" || fail "--bogus: $(cat "$T/err")"
"$SCRIPT" a.safetensors b.safetensors >/dev/null 2>"$T/err"
[ $? -eq 2 ] || fail "two outputs accepted: $(cat "$T/err")"

# a data folder with one real-style image, so that the script starts generating
mkdir -p "$T/data/captcha-v2/train" "$T/tmp"
"$GEN" --out "$T/one" --count 1 --seed 1 >/dev/null || fail "captcha-gen"
cp "$T/one"/*.png "$T/data/captcha-v2/train/"
CAPTCHA_SHARED_DATA=$T/data BUILD=$BUILD TMPDIR=$T/tmp "$SCRIPT" "$T/out.safetensors" \
    >"$T/run.out" 2>&1 &
pid=$!
for _ in $(seq 100); do # until captcha-gen writes into the temporary folder
    [ -n "$(ls "$T"/tmp/*/train 2>/dev/null | head -n 1)" ] && break
    sleep 0.1
done
[ -n "$(ls "$T"/tmp/*/train 2>/dev/null | head -n 1)" ] || fail "the script wrote nothing in 10 s"
kill -TERM "$pid"
wait "$pid"
rc=$?
[ $rc -eq 130 ] || fail "exit status $rc after SIGTERM, expected 130: $(tail -n 3 "$T/run.out")"
grep -q 'interrupted' "$T/run.out" || fail "no interrupted line: $(tail -n 3 "$T/run.out")"
[ -z "$(ls -A "$T/tmp")" ] || fail "temporary folder left: $(ls "$T/tmp")"
pgrep -f "$T/tmp" >/dev/null && fail "a tool still runs on $T/tmp"
[ -e "$T/out.safetensors" ] && fail "the output was written"

[ $FAILS -eq 0 ] || exit 1
echo "make-default-model.sh: --help, bad arguments and SIGTERM cleanup OK"
