#!/bin/bash
# Tests the examples as the README shows them: print-results (C, reads the region metas),
# read-image (C, the library without GStreamer),
# recognize-files.sh and screen-capture.sh (shell, gst-launch-1.0; their --help, error
# messages and $CAPTCHA_SHARED_DATA default too) and bus-watch.py's usage, on captchas made by
# captcha-gen with a fixed seed and read with the bundled model. The text must be each
# file's label: these are the seeds that examples/demo.sh reads, all correctly.
# Usage: test_examples.sh PATH/TO/captcha-gen PATH/TO/print-results PATH/TO/read-image
# Environment (set by meson): CAPTCHA_SOURCE_DIR, GST_PLUGIN_PATH, GST_REGISTRY;
# CAPTCHA_SANITIZED=1 in an AddressSanitizer build, whose plugin the uninstrumented
# gst-launch-1.0 cannot load: the shell examples are then left out.
set -u
GEN=${1:?usage: $0 PATH/TO/captcha-gen PATH/TO/print-results}
PRINT=${2:?usage: $0 PATH/TO/captcha-gen PATH/TO/print-results PATH/TO/read-image}
READ=${3:?usage: $0 PATH/TO/captcha-gen PATH/TO/print-results PATH/TO/read-image}
SRC=${CAPTCHA_SOURCE_DIR:?CAPTCHA_SOURCE_DIR is not set}
T=$(mktemp -d)
# A run usually takes 6-15 s; one, once, hung until meson's 300 s limit without a word. If
# it is still running after 200 s, say which example processes are alive (and for how long),
# so that a hang leaves a trace.
( sleep 200 && echo "test_examples: still running after 200 s; example processes:" >&2 &&
    ps -eo pid,ppid,etime,stat,args | grep -E 'gst-launch|print-results|read-image|recognize-files|screen-capture|bus-watch' |
    grep -v grep >&2 ) &
watchdog=$!
trap 'pkill -P "$watchdog" 2>/dev/null; kill "$watchdog" 2>/dev/null; rm -rf "$T"' EXIT
# (looked up without this build's plugin, which gst-inspect-1.0 cannot load when it is
# built with AddressSanitizer)
for element in filesrc fdsrc decodebin pngdec videoconvert imagefreeze fakesink; do
    if ! env -u GST_PLUGIN_PATH GST_REGISTRY="$T/registry.bin" gst-inspect-1.0 "$element" \
        >/dev/null 2>&1; then
        echo "SKIP: GStreamer element $element is not installed (gstreamer1.0-plugins-base/good)"
        exit 77
    fi
done
if ! fc-list : family | grep -q 'DejaVu Sans'; then
    echo "SKIP: font family 'DejaVu Sans' not installed (Debian fonts-dejavu-core)"
    exit 77
fi
if [ "${CAPTCHA_SANITIZED:-0}" = 1 ]; then
    # GCC 12's LeakSanitizer crashes ("Tracer caught signal 11") on glibc 2.36 while it scans
    # the dynamic TLS of a process whose plugin dlopen'ed libgomp: scan no TLS, and suppress
    # glibc's per-thread dlerror buffer, which only TLS refers to.
    { cat "$SRC/tests/lsan.supp"; echo 'leak:_dlerror_run'; } >"$T/lsan.supp"
    export LSAN_OPTIONS="suppressions=$T/lsan.supp:print_suppressions=0:use_tls=0"
fi
FAILS=0
fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}

"$GEN" --out "$T/gen" --count 3 --seed 2024 --font 'DejaVu Sans' >/dev/null || fail "captcha-gen"
mapfile -t images < <(find "$T/gen" -name '*.png' | LC_ALL=C sort)
[ "${#images[@]}" -eq 3 ] || fail "captcha-gen made ${#images[@]} images, expected 3"
label() { # a.png, a_1.png -> a
    local name
    name=$(basename "$1" .png)
    echo "${name%%_*}"
}
first=${images[0]}
truth=$(label "$first")

# --- print-results: a header, then one line per region: PTS id parent box text confidence new|reused ---
out=$("$PRINT" filesrc "location=$first" ! decodebin ! videoconvert ! \
    imagefreeze num-buffers=1 ! captchaocr ! fakesink 2>"$T/err")
status=$?
[ "$status" -eq 0 ] || fail "print-results exit $status: $(cat "$T/err")"
[ "$(head -n 1 <<<"$out")" = "$(printf 'pts\tid\tparent\tregion\ttext\tconfidence\treused')" ] ||
    fail "print-results header line: $(head -n 1 <<<"$out")"
[ "$(wc -l <<<"$out")" -eq 2 ] || fail "print-results printed $(wc -l <<<"$out") lines, expected 2"
IFS=$'\t' read -r _ id parent box text confidence reused < <(sed -n 2p <<<"$out")
[ "$text" = "$truth" ] || fail "print-results read '$text' from $first (label $truth): $out"
[ "$box" = "0,0 200x50" ] || fail "print-results box '$box', expected the whole 200x50 image"
[ "$id" = 0 ] && [ "$parent" = -1 ] && [ "$reused" = new ] ||
    fail "print-results id/parent-id/reused '$id' '$parent' '$reused', expected 0 -1 new"
awk -v c="$confidence" 'BEGIN { exit !(c > 0 && c <= 1) }' ||
    fail "print-results confidence '$confidence' outside (0, 1]"

# --- two captchaocr in series, the second reading the first's region (roi-type): the
# probe sits on the last, so both regions are printed, the second with parent-id 0 ---
out=$("$PRINT" filesrc "location=$first" ! decodebin ! videoconvert ! \
    imagefreeze num-buffers=1 ! captchaocr ! captchaocr roi-type=captcha ! fakesink 2>"$T/err")
status=$?
[ "$status" -eq 0 ] || fail "print-results, two elements: exit $status: $(cat "$T/err")"
[ "$(sed -n '2,$p' <<<"$out" | cut -f2,3,4,5)" = "$(printf '0\t-1\t0,0 200x50\t%s\n1\t0\t0,0 200x50\t%s' "$truth" "$truth")" ] ||
    fail "print-results, two elements: expected regions 0 and 1 (parent 0) of the last element: $out"

# --- a description in parentheses is a bin, which has no bus of its own: run in a pipeline,
# as gst-launch-1.0 does (it crashed on a NULL bus); one element is no pipeline: exit 2
# naming it ---
out=$("$PRINT" '(' filesrc "location=$first" ! decodebin ! videoconvert ! \
    imagefreeze num-buffers=1 ! captchaocr ! fakesink ')' 2>"$T/err")
status=$?
[ "$status" -eq 0 ] && [ "$(sed -n 2p <<<"$out" | cut -f5)" = "$truth" ] ||
    fail "print-results on a bin: exit $status, stdout '$out', stderr $(cat "$T/err")"
out=$("$PRINT" captchaocr 2>"$T/err")
status=$?
[ "$status" -eq 2 ] && [ -z "$out" ] && grep -q 'one element, captchaocr0, not a pipeline' "$T/err" ||
    fail "print-results captchaocr: exit $status, stdout '$out', stderr $(cat "$T/err")"

# --- read-image (the C library alone): TEXT<TAB>CONFIDENCE, or the file's error ---
out=$("$READ" "$SRC/model/captcha-default.safetensors" "$first" 2>"$T/err")
status=$?
[ "$status" -eq 0 ] && [ "$(cut -f1 <<<"$out")" = "$truth" ] &&
    [[ "$(cut -f2 <<<"$out")" =~ ^[01]\.[0-9]{4}$ ]] ||
    fail "read-image on $first (label $truth): exit $status, '$out' $(cat "$T/err")"
"$READ" "$SRC/model/captcha-default.safetensors" "$T/none.png" >/dev/null 2>"$T/err"
status=$?
[ "$status" -eq 1 ] && grep -q "$T/none.png" "$T/err" ||
    fail "read-image on a missing file: exit $status, stderr $(cat "$T/err")"

# --- print-results usage: asked for on stdout (exit 0); after a bad option on stderr (exit 2)
# with nothing on stdout, where a script reads results ---
out=$("$PRINT" --help 2>/dev/null)
status=$?
[ "$status" -eq 0 ] && grep -q '^Usage:' <<<"$out" ||
    fail "print-results --help: exit $status, stdout '$out'"
out=$("$PRINT" --no-such-option 2>"$T/err")
status=$?
[ "$status" -eq 2 ] || fail "print-results --no-such-option: exit $status, expected 2"
[ -z "$out" ] || fail "print-results --no-such-option wrote to stdout: $out"
grep -q 'unknown option --no-such-option' "$T/err" && grep -q '^Usage:' "$T/err" ||
    fail "print-results --no-such-option: stderr lacks the error or the usage: $(cat "$T/err")"

# --- read-image usage: -h/--help on stdout (exit 0), saying what it prints; a wrong number
# of arguments on stderr (exit 2) ---
out=$("$READ" --help 2>"$T/err")
status=$?
[ "$status" -eq 0 ] && grep -q '^Usage: .*read-image MODEL.safetensors IMAGE' <<<"$out" &&
    grep -q 'TEXT<TAB>CONFIDENCE' <<<"$out" ||
    fail "read-image --help: exit $status, stdout '$out', stderr $(cat "$T/err")"
out=$("$READ" "$first" 2>"$T/err")
status=$?
[ "$status" -eq 2 ] && [ -z "$out" ] && grep -q '^Usage: ' "$T/err" ||
    fail "read-image with one argument: exit $status, stdout '$out', stderr $(cat "$T/err")"

if [ "${CAPTCHA_SANITIZED:-0}" = 1 ]; then
    echo "note: AddressSanitizer build: recognize-files.sh and screen-capture.sh left out"
    [ "$FAILS" -eq 0 ] && echo "ok: print-results, read-image" && exit 0
    exit 1
fi

# --- --help of the shell examples: the whole leading comment block (after #!, up to the
# first line that is not a comment, "# " taken off), not less, and no code ---
for script in recognize-files.sh screen-capture.sh; do
    header=$(sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$SRC/examples/$script")
    out=$("$SRC/examples/$script" --help 2>"$T/err")
    status=$?
    [ "$status" -eq 0 ] || fail "$script --help: exit $status: $(cat "$T/err")"
    [ "$out" = "$header" ] ||
        fail "$script --help differs from its header comment: $(diff <(echo "$header") <(echo "$out"))"
    ! grep -q 'set -eu' <<<"$out" || fail "$script --help prints its code: $out"
    grep -q CAPTCHA_SHARED_DATA <<<"$out" || fail "$script --help does not name CAPTCHA_SHARED_DATA"
done
grep -q 'CAPTCHA_BUILD_DIR' <<<"$("$SRC/examples/recognize-files.sh" --help)" ||
    fail "recognize-files.sh --help stops before the GST_PLUGIN_PATH / CAPTCHA_BUILD_DIR lines"
# an option given without its value: a usage error naming the option (exit 2), not the
# shell's "2: parameter not set"
for args in "recognize-files.sh --model" "recognize-files.sh --device" \
    "screen-capture.sh --model" "screen-capture.sh --x" "screen-capture.sh --y"; do
    set -- $args
    "$SRC/examples/$1" "$2" >"$T/out" 2>"$T/err"
    status=$?
    [ "$status" -eq 2 ] && grep -q -e "$2 needs a value" "$T/err" &&
        ! grep -q 'parameter not set' "$T/err" ||
        fail "$args (no value): exit $status, stderr $(cat "$T/err")"
done

# --- bus-watch.py: -h/--help print the usage (exit 0); an unknown option prints it on
# stderr (exit 2), not "pipeline: syntax error". Run by Debian's interpreter, whose gi
# (python3-gst-1.0) it needs, as the README says ---
if /usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0")' 2>/dev/null; then
    for option in -h --help; do
        out=$(/usr/bin/python3 "$SRC/examples/bus-watch.py" "$option" 2>"$T/err")
        status=$?
        [ "$status" -eq 0 ] && grep -q '^Usage: bus-watch.py' <<<"$out" ||
            fail "bus-watch.py $option: exit $status, stdout '$out', stderr $(cat "$T/err")"
    done
    out=$(/usr/bin/python3 "$SRC/examples/bus-watch.py" --no-such-option 2>"$T/err")
    status=$?
    [ "$status" -eq 2 ] && [ -z "$out" ] && grep -q 'unknown option --no-such-option' "$T/err" &&
        grep -q '^Usage: bus-watch.py' "$T/err" ||
        fail "bus-watch.py --no-such-option: exit $status, stdout '$out', stderr $(cat "$T/err")"
    # each argument is one token, as print-results and gst-launch-1.0 take them: a file
    # name with spaces needs no quoting inside its location= argument
    spaced="$T/with space's.png"
    cp "$first" "$spaced"
    out=$(timeout 60 /usr/bin/python3 "$SRC/examples/bus-watch.py" filesrc "location=$spaced" ! \
        decodebin ! videoconvert ! imagefreeze num-buffers=1 ! captchaocr ! fakesink 2>"$T/err")
    status=$?
    [ "$status" -eq 0 ] && [ "$(sed -n 2p <<<"$out" | cut -f2)" = "$truth" ] ||
        fail "bus-watch.py on '$spaced': exit $status, stdout '$out', stderr $(cat "$T/err")"
    rm -f "$spaced"
    # a description of one element is not a pipeline (and has no bus): refused with its
    # name (exit 2), not a Python traceback; a bin in parentheses runs as a pipeline
    out=$(timeout 60 /usr/bin/python3 "$SRC/examples/bus-watch.py" videotestsrc num-buffers=1 2>"$T/err")
    status=$?
    [ "$status" -eq 2 ] && ! grep -q Traceback "$T/err" && grep -q 'videotestsrc0' "$T/err" ||
        fail "bus-watch.py videotestsrc: exit $status, stdout '$out', stderr $(cat "$T/err")"
    out=$(timeout 60 /usr/bin/python3 "$SRC/examples/bus-watch.py" '(' filesrc "location=$first" ! \
        decodebin ! videoconvert ! imagefreeze num-buffers=1 ! captchaocr ! fakesink ')' 2>"$T/err")
    status=$?
    [ "$status" -eq 0 ] && [ "$(sed -n 2p <<<"$out" | cut -f2)" = "$truth" ] ||
        fail "bus-watch.py on a bin: exit $status, stdout '$out', stderr $(cat "$T/err")"
else
    echo "note: /usr/bin/python3 lacks gi with Gst 1.0 (python3-gst-1.0): bus-watch.py left out"
fi
# run as a program (its first line names Debian's interpreter), --help needs no gi; an
# interpreter without gi gets a message naming it and the package, exit 1
out=$("$SRC/examples/bus-watch.py" --help 2>"$T/err") && grep -q '^Usage: bus-watch.py' <<<"$out" ||
    fail "examples/bus-watch.py --help as a program: stdout '$out', stderr $(cat "$T/err")"
for python in python3 /usr/local/bin/python3; do
    command -v "$python" >/dev/null && ! "$python" -c 'import gi' 2>/dev/null || continue
    "$python" "$SRC/examples/bus-watch.py" >"$T/out" 2>"$T/err"
    status=$?
    [ "$status" -eq 1 ] && grep -q 'python3-gst-1.0' "$T/err" ||
        fail "bus-watch.py on $python without gi: exit $status, stderr $(cat "$T/err")"
    break
done

# --- recognize-files.sh: path<TAB>text<TAB>confidence per image, sorted; any file name ---
# (a name with a quote, a double quote, a backslash and spaces: paths are printed as they are)
odd="$T/gen/it's a \"name\" \\x.png"
cp "$first" "$odd"
"$SRC/examples/recognize-files.sh" "$T/gen" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 0 ] || fail "recognize-files.sh exit $status: $(cat "$T/err")"
[ "$(wc -l <"$T/out")" -eq 4 ] || fail "recognize-files.sh printed $(wc -l <"$T/out") lines, expected 4"
[ "$(cut -f1 "$T/out")" = "$(printf '%s\n' "$odd" "${images[@]}" | LC_ALL=C sort)" ] ||
    fail "recognize-files.sh paths differ from the files, sorted: $(cut -f1 "$T/out")"
while IFS=$'\t' read -r path text confidence; do
    want=$(label "$path")
    [ "$path" = "$odd" ] && want=$truth
    [ "$text" = "$want" ] || fail "recognize-files.sh read '$text' from $path, expected '$want'"
    [[ "$confidence" =~ ^[01]\.[0-9]{4}$ ]] ||
        fail "recognize-files.sh confidence '$confidence' is not 4 decimals"
done <"$T/out"

# a folder with no image to read (here only a BMP and a hidden PNG): said on stderr with
# the folder's name and exit 1, as for a file that gives no result, not a silent success
mkdir "$T/noimages"
: >"$T/noimages/a.bmp"
cp "$first" "$T/noimages/.hidden.png"
"$SRC/examples/recognize-files.sh" "$T/noimages" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 1 ] && [ ! -s "$T/out" ] && grep -q "recognize-files: $T/noimages: no " "$T/err" ||
    fail "recognize-files.sh on a folder without images: exit $status, $(cat "$T/out" "$T/err")"
# a file that is not an image: reported on stderr, exit 1, the other files still read
printf 'not a png' >"$T/gen/broken.png"
"$SRC/examples/recognize-files.sh" "$T/gen" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 1 ] || fail "recognize-files.sh with a broken file: exit $status, expected 1"
grep -q 'broken.png' "$T/err" || fail "recognize-files.sh did not name broken.png: $(cat "$T/err")"
[ "$(grep -c "$(printf '\t')$truth$(printf '\t')" "$T/out")" -ge 2 ] ||
    fail "recognize-files.sh stopped reading after the broken file: $(cat "$T/out")"
# ... with the pipeline's error (typefind's), not an empty "Additional debug info:"
grep -q "broken.png: error from typefind: Could not determine type of stream" "$T/err" &&
    ! grep -q 'Additional debug info' "$T/err" ||
    fail "recognize-files.sh did not give the pipeline's error for broken.png: $(cat "$T/err")"
rm -f "$T/gen/broken.png" "$odd"

# a CMYK JPEG (8x8), which jpegdec refuses: its reason is only in GStreamer's debug log (the
# bus message says "Internal data stream error")
if env -u GST_PLUGIN_PATH GST_REGISTRY="$T/registry.bin" gst-inspect-1.0 jpegdec >/dev/null 2>&1; then
    base64 -d >"$T/cmyk.jpg" <<'JPEG'
/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwAQCwwODAoQDg0OEhEQExgoGhgWFhgxIyUdKDozPTw5Mzg3
QEhcTkBEV0U3OFBtUVdfYmdoZz5NcXlwZHhcZWdj/8AAFAgACAAIBEMRAE0RAFkRAEsRAP/EABQA
AQAAAAAAAAAAAAAAAAAAAAf/xAAUEAEAAAAAAAAAAAAAAAAAAAAA/9oADgRDAE0AWQBLAAA/AEAg
EAgP/9k=
JPEG
    "$SRC/examples/recognize-files.sh" "$T/cmyk.jpg" >"$T/out" 2>"$T/err"
    status=$?
    [ "$status" -eq 1 ] && grep -q "cmyk.jpg: error from jpegdec[0-9]*: " "$T/err" ||
        fail "recognize-files.sh on a CMYK JPEG: exit $status, no jpegdec error: $(cat "$T/err")"
else
    echo "note: GStreamer element jpegdec is not installed: the CMYK JPEG check left out"
fi

# without FILE: the test split under $CAPTCHA_SHARED_DATA (captcha-v2/test), not ../shared/data
mkdir -p "$T/shared/captcha-v2/test"
cp "$first" "$T/shared/captcha-v2/test/"
shared_first=$T/shared/captcha-v2/test/$(basename "$first")
CAPTCHA_SHARED_DATA=$T/shared "$SRC/examples/recognize-files.sh" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 0 ] && [ "$(cut -f1,2 "$T/out")" = "$shared_first$(printf '\t')$truth" ] ||
    fail "recognize-files.sh with CAPTCHA_SHARED_DATA=$T/shared: exit $status, read $(cat "$T/out" "$T/err")"
CAPTCHA_SHARED_DATA=$T/nowhere "$SRC/examples/recognize-files.sh" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 2 ] && [ ! -s "$T/out" ] && grep -q "$T/nowhere/captcha-v2/test.*CAPTCHA_SHARED_DATA" "$T/err" ||
    fail "recognize-files.sh with CAPTCHA_SHARED_DATA=$T/nowhere: exit $status, $(cat "$T/out" "$T/err")"

# --- screen-capture.sh: the image inside a 1280x720 frame at 400,300, and on its own ---
"$SRC/examples/screen-capture.sh" "$first" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 0 ] || fail "screen-capture.sh exit $status: $(cat "$T/err")"
grep -q "^in a 1280x720 screen: $truth [0-9.]* 400,300 200x50$" "$T/out" &&
    grep -q "^image alone: *$truth [0-9.]* 0,0 200x50$" "$T/out" ||
    fail "screen-capture.sh did not read $truth at 400,300 200x50: $(cat "$T/out")"
"$SRC/examples/screen-capture.sh" "$T/missing.png" >/dev/null 2>"$T/err"
status=$?
[ "$status" -eq 1 ] && grep -q 'missing.png' "$T/err" ||
    fail "screen-capture.sh on a missing file: exit $status, stderr $(cat "$T/err")"
# a file that is not an image: the pipeline's error, not only "cannot read the size"
printf 'not a png' >"$T/text.png"
"$SRC/examples/screen-capture.sh" "$T/text.png" >/dev/null 2>"$T/err"
status=$?
[ "$status" -eq 1 ] && grep -q 'error from typefind: Could not determine type of stream' "$T/err" ||
    fail "screen-capture.sh on a text file: exit $status, stderr $(cat "$T/err")"
# a region wholly outside the frame: captchaocr's warning saying so, and not its device=auto
# warning that it reads on the CPU (no reason for the missing result); the image read on
# its own is still printed
"$SRC/examples/screen-capture.sh" --x 1300 "$first" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 1 ] && grep -q '^warning from captchaocr[0-9]*: .*lies outside the 1280x720 image' "$T/err" &&
    ! grep -q 'No usable GPU' "$T/err" ||
    fail "screen-capture.sh --x 1300: exit $status, stderr $(cat "$T/err")"
grep -q "^image alone: *$truth " "$T/out" ||
    fail "screen-capture.sh --x 1300: the image's own reading is not printed: $(cat "$T/out")"
# --x/--y are decimal (a leading zero is not octal: --x 010 is column 10) and whole numbers
# from 0 to roi-x's 2147483647; anything else is a usage error naming the option and value
"$SRC/examples/screen-capture.sh" --x 010 --y 08 "$first" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 0 ] && grep -q "^in a 1280x720 screen: $truth [0-9.]* 10,8 200x50$" "$T/out" ||
    fail "screen-capture.sh --x 010 --y 08: exit $status, $(cat "$T/out" "$T/err")"
for value in '' -5 1e3 99999999999999999999 2147483648; do
    "$SRC/examples/screen-capture.sh" --y "$value" "$first" >"$T/out" 2>"$T/err"
    status=$?
    [ "$status" -eq 2 ] && [ ! -s "$T/out" ] && grep -q -e "--y '$value'" "$T/err" ||
        fail "screen-capture.sh --y '$value': exit $status, $(cat "$T/out" "$T/err")"
done
# without IMAGE: the first PNG under $CAPTCHA_SHARED_DATA/captcha-v2/test
CAPTCHA_SHARED_DATA=$T/shared "$SRC/examples/screen-capture.sh" >"$T/out" 2>"$T/err"
status=$?
[ "$status" -eq 0 ] && grep -q "^in a 1280x720 screen: $truth " "$T/out" ||
    fail "screen-capture.sh with CAPTCHA_SHARED_DATA=$T/shared: exit $status, $(cat "$T/out" "$T/err")"

if [ "$FAILS" -ne 0 ]; then
    echo "$FAILS failure(s)"
    exit 1
fi
echo "ok: print-results, read-image, recognize-files.sh, screen-capture.sh, bus-watch.py usage"
