# Sourced by the example scripts. Sets source_dir (the source tree) and,
# unless GST_PLUGIN_PATH is already set, points it at the uninstalled plugin
# in build/gst of the source tree ($CAPTCHA_BUILD_DIR/gst for another build).
# Defines need_value, print_help and pipeline_messages (below), and has gst-launch-1.0 log
# warnings (GST_DEBUG=*:WARNING unless GST_DEBUG is set, without colours):
# some decoders give their reason only there (jpegdec on a CMYK JPEG: "number
# of components not supported"), the bus message only "Internal data stream
# error". The scripts capture that output; it never reaches the terminal.
source_dir=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${CAPTCHA_BUILD_DIR:-$source_dir/build}
if [ -z "${GST_PLUGIN_PATH:-}" ] && [ -d "$build_dir/gst" ]; then
    GST_PLUGIN_PATH=$build_dir/gst
    export GST_PLUGIN_PATH
fi
GST_DEBUG=${GST_DEBUG:-*:WARNING}
GST_DEBUG_NO_COLOR=1
GST_DEBUG_COLOR_MODE=off
export GST_DEBUG GST_DEBUG_NO_COLOR GST_DEBUG_COLOR_MODE

# Usage error (exit 2) when option $2 of script $1 is the last argument, without
# its value: need_value SCRIPT OPTION $#
need_value() {
    if [ "$3" -lt 2 ]; then
        echo "$1: $2 needs a value (see --help)" >&2
        exit 2
    fi
}

# Prints the calling script's help: its leading comment block (after the #!
# line, up to the first line that is not a comment), without the "# ".
print_help() {
    awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# Reads gst-launch-1.0's output (stdout and stderr) and prints the errors and
# warnings of the pipeline's elements, one line each, as
#     error from ELEMENT: TEXT      (or warning from ...)
# with the bus messages' text and debug detail (less the source location
# line) and the "error:"/"warning:" lines of the debug log, each once.
# Leaves out captchaocr's warning that device=auto found no usable GPU and
# reads on the CPU: that is no reason for a missing result.
pipeline_messages() {
    awk '
    function element(path) { sub(/.*[:\/]/, "", path); return path }
    function emit(line) { if (line !~ /No usable GPU \(device=auto\)/ && !seen[line]++) print line }
    # a debug log line: TIME PID THREAD LEVEL CATEGORY FILE:LINE:FUNCTION:<ELEMENT> error: TEXT
    /[0-9]+:[0-9][0-9]:[0-9][0-9]\.[0-9]+ +[0-9]+ +0x[0-9a-f]+ / {
        detail = 0
        if (match($0, /:<[^>]*> (error|warning): /)) {
            head = substr($0, RSTART + 2, RLENGTH - 4)    # ELEMENT> error
            split(head, part, "> ")
            emit(part[2] " from " part[1] ": " substr($0, RSTART + RLENGTH))
        }
        next
    }
    # a bus message: ERROR: from element /GstPipeline:pipeline0/GstFdSrc:fdsrc0: TEXT
    # (found anywhere in the line: gst-launch-1.0 writes it on stderr, and the -m
    # lines on stdout may precede it unfinished)
    /(ERROR|WARNING): from element / {
        match($0, /(ERROR|WARNING): from element /)
        kind = (substr($0, RSTART, 1) == "E") ? "error" : "warning"
        rest = substr($0, RSTART + RLENGTH)
        i = index(rest, ": ")
        name = element(substr(rest, 1, i - 1))
        emit(kind " from " name ": " substr(rest, i + 2))
        detail = 0
        next
    }
    /^Additional debug info:$/ { detail = 1; next }
    detail == 1 { detail = 2; next }    # the source location
    detail == 2 {
        if (/^(ERROR|WARNING|INFO|Got |Gst[A-Za-z]*, |Setting pipeline|Pipeline is|Prerolled|Redistribute|New clock|Execution ended|Freeing pipeline|Interrupt)/)
            detail = 0
        else if ($0 != "")
            emit(kind " from " name ": " $0)
        next
    }
    '
}
