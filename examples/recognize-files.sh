#!/bin/sh
# Reads captcha image files with the captchaocr element, one gst-launch-1.0
# pipeline per file, and prints one line per file:
#     path<TAB>text<TAB>confidence
# (text and confidence empty when the element gave no result), the
# confidence with 4 decimals, as captcha-predict prints it, so that the two
# outputs can be compared with diff (for paths without backslashes or control
# characters: captcha-predict prints those C-escaped, this script as they are;
# and with `captcha-predict --batch 1`: at its default batch of 32 the CPU
# kernels round differently, which can move a confidence in its 4th decimal).
#
# Usage: recognize-files.sh [--model FILE] [--device auto|cpu|cuda] [FILE|DIR]...
#   Without FILE/DIR: the shared test split $CAPTCHA_SHARED_DATA/captcha-v2/test,
#   where CAPTCHA_SHARED_DATA defaults to ../shared/data next to the source
#   tree (as for examples/demo.sh and the tests). Directories are read for their
#   .png, .jpg and .jpeg files (any case; the formats the set-up's GStreamer
#   decodes; not hidden files, not subfolders), sorted by name (bytes, as
#   LC_ALL=C sorts). A file name may hold any character: the file goes to
#   the pipeline on its standard input (fdsrc), not in its description.
#   Without --model: $CAPTCHA_MODEL, else the bundled model (see
#   gst-inspect-1.0 captchaocr).
#   The plugin is taken from GST_PLUGIN_PATH, else from build/gst of the
#   source tree when that exists (set CAPTCHA_BUILD_DIR for another build).
#   A file that gives no result is reported on stderr with the pipeline's
#   errors, and makes the exit status 1; so does a folder with no such file.
#
# The text is parsed from gst-launch-1.0 -m output, which holds codes of
# letters and digits as they are; for charsets with punctuation use
# bus-watch.py, which reads the message's fields directly.
#
# Pipeline per file (the element's "captcha" bus message, printed by -m):
#   fdsrc ! decodebin ! videoconvert ! imagefreeze num-buffers=1 !
#   captchaocr ! fakesink   (< FILE)
set -eu

. "$(dirname "$0")/plugin-env.sh"

model=""
device=auto
while [ $# -gt 0 ]; do
    case "$1" in
    --model) need_value recognize-files "$1" $#; model=$2; shift 2 ;;
    --device) need_value recognize-files "$1" $#; device=$2; shift 2 ;;
    -h|--help) print_help; exit 0 ;;
    --) shift; break ;;
    -*) echo "recognize-files: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
done
if [ $# -eq 0 ]; then
    default_dir=${CAPTCHA_SHARED_DATA:-$(cd "$source_dir/.." && pwd)/shared/data}/captcha-v2/test
    if [ ! -d "$default_dir" ]; then
        echo "recognize-files: no input given and $default_dir is absent" \
            "(give files or folders, or set CAPTCHA_SHARED_DATA to the folder holding captcha-v2/)" >&2
        exit 2
    fi
    set -- "$default_dir"
fi

recognize() {
    # -m prints the element message as one line, e.g.
    # ... (element): captcha, timestamp=..., results=(structure){ "captcha-result\,\ text\=\(string\)226md\,\ confidence\=\(double\)0.93\,\ ..." };
    # (the first result only: one region, the whole image)
    if [ ! -r "$1" ] || [ -d "$1" ]; then
        printf '%s\t\t\n' "$1"
        echo "recognize-files: $1: cannot be read" >&2
        return 1
    fi
    output=$(timeout 30 gst-launch-1.0 -m fdsrc ! decodebin ! videoconvert ! \
        imagefreeze num-buffers=1 ! captchaocr ${model:+"model=$model"} device="$device" ! \
        fakesink 2>&1 <"$1") || true
    case "$output" in
    *'no element "captchaocr"'*)
        echo "recognize-files: the captchaocr element is not found (GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-unset}); build the project or set GST_PLUGIN_PATH" >&2
        exit 1 ;;
    *'erroneous pipeline'*)
        # the same for every file (e.g. a bad --device): stop at once
        printf '%s\n' "$output" | grep -m 1 'erroneous pipeline' >&2
        exit 2 ;;
    esac
    line=$(printf '%s\n' "$output" | grep '(element): captcha,' | head -n 1) || true
    text=$(printf '%s\n' "$line" | sed -n 's/.*text\\=\\(string\\)\([^\\]*\)\\,.*/\1/p')
    confidence=$(printf '%s\n' "$line" | sed -n 's/.*confidence\\=\\(double\\)\([^\\]*\)\\,.*/\1/p')
    if [ -n "$confidence" ]; then
        confidence=$(printf '%.4f' "$confidence")
    fi
    printf '%s\t%s\t%s\n' "$1" "$text" "$confidence"
    if [ -z "$text" ]; then
        # the pipeline's errors (e.g. "error from jpegdec0: number of components not
        # supported: 4 (max 3)" for a CMYK JPEG), one line each
        printf '%s\n' "$output" | pipeline_messages | while IFS= read -r message; do
            printf 'recognize-files: %s: %s\n' "$1" "$message"
        done >&2
        echo "recognize-files: $1: no result (unreadable file, no region read, or a 30 s timeout)" >&2
        return 1
    fi
}

status=0

# the glob below lists a folder in byte order and leaves hidden files out; its
# names may hold any character, a newline included
LC_ALL=C
export LC_ALL
for input in "$@"; do
    if [ -d "$input" ]; then
        found=0
        for file in "$input"/*; do
            [ -f "$file" ] || continue
            case "$file" in
            *.[Pp][Nn][Gg] | *.[Jj][Pp][Gg] | *.[Jj][Pp][Ee][Gg])
                found=1
                recognize "$file" || status=1 ;;
            esac
        done
        if [ "$found" -eq 0 ]; then
            # (a mistyped folder, or images of another format, is not a silent success)
            echo "recognize-files: $input: no .png, .jpg or .jpeg file to read (hidden" \
                "files and subfolders are left out)" >&2
            status=1
        fi
    else
        recognize "$input" || status=1
    fi
done
exit $status
