#!/bin/sh
# Reads a captcha shown somewhere on a "screen": the image is composited at
# an offset into a 1280x720 BGRx frame (the format ximagesrc gives), and
# captchaocr reads only that region, set by the roi-* properties, as one
# would read a fixed place of a screen capture. The image is also read on
# its own; both lines should show the same text.
#
# Usage: screen-capture.sh [--model FILE] [--x X] [--y Y] IMAGE
#   IMAGE defaults to the first PNG of $CAPTCHA_SHARED_DATA/captcha-v2/test,
#   where CAPTCHA_SHARED_DATA defaults to ../shared/data next to the source
#   tree (as for examples/demo.sh and the tests).
#   The region is X,Y (default 400,300) and the image's size (read from
#   the decoded caps; 200x50 for the shared data).
#   When a reading gives no result, the pipeline's errors and warnings are
#   printed on stderr (exit 1).
#
# With a real screen, replace the compositor part by
#   ximagesrc use-damage=false ! videoconvert ! video/x-raw,format=BGRx
set -eu

. "$(dirname "$0")/plugin-env.sh"

model=""
x=400
y=300
while [ $# -gt 0 ]; do
    case "$1" in
    --model) need_value screen-capture "$1" $#; model=$2; shift 2 ;;
    --x) need_value screen-capture "$1" $#; x=$2; shift 2 ;;
    --y) need_value screen-capture "$1" $#; y=$2; shift 2 ;;
    -h|--help) print_help; exit 0 ;;
    -*) echo "screen-capture: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
# --x and --y: decimal whole numbers from 0 to 2147483647 (roi-x/roi-y's range),
# leading zeros dropped (the shell's arithmetic and gst-launch-1.0 would read 010
# as octal 8, and 08 not at all)
for option in x y; do
    eval "value=\$$option"
    case "$value" in
    '' | *[!0-9]*) digits="" ;;
    *) digits=$(printf '%s\n' "$value" | sed 's/^0*//'); digits=${digits:-0} ;;
    esac
    if [ -z "$digits" ] || [ ${#digits} -gt 10 ] ||
        { [ ${#digits} -eq 10 ] && [ "$digits" -gt 2147483647 ]; }; then
        echo "screen-capture: --$option '$value': expected a whole number of pixels from 0" \
            "to 2147483647" >&2
        exit 2
    fi
    eval "$option=\$digits"
done

if [ $# -gt 0 ]; then
    image=$1
else
    test_dir=${CAPTCHA_SHARED_DATA:-$source_dir/../shared/data}/captcha-v2/test
    image=$(find "$test_dir" -name '*.png' 2>/dev/null | LC_ALL=C sort | head -n 1)
    if [ -z "$image" ]; then
        echo "screen-capture: give an image: the shared test data ($test_dir) is absent" \
            "(set CAPTCHA_SHARED_DATA to the folder holding captcha-v2/)" >&2
        exit 2
    fi
fi

# Prints on stderr the errors and warnings in a gst-launch-1.0 output $1 (not
# captchaocr's warning that device=auto reads on the CPU, no reason for a
# missing result), else the output's "erroneous pipeline" line, else its last lines.
show_messages() {
    messages=$(printf '%s\n' "$1" | pipeline_messages)
    if [ -n "$messages" ]; then
        printf '%s\n' "$messages" >&2
    else
        printf '%s\n' "$1" | grep 'erroneous pipeline' >&2 || printf '%s\n' "$1" | tail -n 5 >&2
    fi
}

# The image's size, from the caps gst-launch-1.0 -v prints
# ("... caps = video/x-raw, format=(string)RGBA, width=(int)200, height=(int)50, ...").
# (each pipeline reads the image on its standard input, fdsrc, so that any
# file name works: gst-launch-1.0 would parse one in location=)
if [ ! -r "$image" ] || [ -d "$image" ]; then
    echo "screen-capture: $image cannot be read" >&2
    exit 1
fi
output=$(gst-launch-1.0 -v fdsrc ! decodebin ! videoconvert ! fakesink 2>&1 <"$image") || true
caps=$(printf '%s\n' "$output" | grep 'GstFakeSink.*caps = video/x-raw' | head -n 1) || true
width=$(printf '%s\n' "$caps" | sed -n 's/.*width=(int)\([0-9]*\).*/\1/p')
height=$(printf '%s\n' "$caps" | sed -n 's/.*height=(int)\([0-9]*\).*/\1/p')
if [ -z "$width" ] || [ -z "$height" ]; then
    echo "screen-capture: cannot read the size of $image:" >&2
    show_messages "$output"
    exit 1
fi

if [ $((x + width)) -gt 1280 ] || [ $((y + height)) -gt 720 ]; then
    echo "warning: a ${width}x${height} image at $x,$y does not fit the 1280x720 screen:" \
        "only its visible part is read, so the two lines may differ" >&2
fi

# Prints "text confidence x,y widthxheight" from the -m output's first
# captcha message.
first_result() {
    grep '(element): captcha,' | head -n 1 | sed -n \
        's/.*text\\=\\(string\\)\([^\\]*\)\\,\\ confidence\\=\\(double\\)\([^\\]*\)\\,\\ x\\=\\(int\\)\([0-9]*\)\\,\\ y\\=\\(int\\)\([0-9]*\)\\,\\ width\\=\\(int\\)\([0-9]*\)\\,\\ height\\=\\(int\\)\([0-9]*\).*/\1 \2 \3,\4 \5x\6/p'
}

# Fails (exit 1) with the pipeline's errors and warnings when it gave no result.
check() { # $1: what was read, $2: the pipeline's output, $3: its result
    if [ -z "$3" ]; then
        echo "screen-capture: no result for $1:" >&2
        show_messages "$2"
        exit 1
    fi
}

output=$(gst-launch-1.0 -m fdsrc ! decodebin ! videoconvert ! \
    imagefreeze num-buffers=1 ! captchaocr ${model:+"model=$model"} ! fakesink 2>&1 <"$image") ||
    true
alone=$(printf '%s\n' "$output" | first_result)
check "the image alone" "$output" "$alone"
echo "image alone:          $alone"

# Background: a 1280x720 test pattern; the image on top at (x, y).
output=$(gst-launch-1.0 -m \
    compositor name=screen background=black \
        sink_0::zorder=0 sink_1::xpos="$x" sink_1::ypos="$y" sink_1::zorder=1 ! \
    video/x-raw,format=BGRx,width=1280,height=720 ! \
    captchaocr ${model:+"model=$model"} roi-x="$x" roi-y="$y" roi-width="$width" roi-height="$height" ! \
    fakesink \
    videotestsrc pattern=smpte num-buffers=1 ! \
        video/x-raw,width=1280,height=720,framerate=1/1 ! screen.sink_0 \
    fdsrc ! decodebin ! videoconvert ! \
        imagefreeze num-buffers=1 ! video/x-raw,framerate=1/1 ! screen.sink_1 \
    2>&1 <"$image") || true
screen=$(printf '%s\n' "$output" | first_result)
check "the region of the screen" "$output" "$screen"

echo "in a 1280x720 screen: $screen"
