# Sourced by the example scripts. Sets source_dir (the source tree) and,
# unless GST_PLUGIN_PATH is already set, points it at the uninstalled plugin
# in build/gst of the source tree ($CAPTCHA_BUILD_DIR/gst for another build).
# Defines print_help (below).
source_dir=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${CAPTCHA_BUILD_DIR:-$source_dir/build}
if [ -z "${GST_PLUGIN_PATH:-}" ] && [ -d "$build_dir/gst" ]; then
    GST_PLUGIN_PATH=$build_dir/gst
    export GST_PLUGIN_PATH
fi

# Prints the calling script's help: its leading comment block (after the #!
# line, up to the first line that is not a comment), without the "# ".
print_help() {
    awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}
