# Sourced by the captcha-train / captcha-predict test scripts: arguments, a temporary folder
# removed on exit, a failure counter (fail MESSAGE; finish), generated images (make_set).
set -u
TRAIN=${1:?usage: $0 captcha-train captcha-predict make_images}
PREDICT=${2:?usage: $0 captcha-train captcha-predict make_images}
MAKE=${3:?usage: $0 captcha-train captcha-predict make_images}
# absolute: meson passes them relative to the build folder, and a test may cd
absolute() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
TRAIN=$(absolute "$TRAIN")
PREDICT=$(absolute "$PREDICT")
MAKE=$(absolute "$MAKE")
T=$(mktemp -d)
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
FAILS=0
fail() {
    printf 'FAIL: %s\n' "$*" # not echo: dash's echo would expand backslashes
    FAILS=$((FAILS + 1))
}
# make_set DIR COUNT SEED: COUNT images labelled with 2 characters of "abc", 64x32.
make_set() {
    mkdir -p "$1" && "$MAKE" "$1" "$2" "$3" abc 2 || { echo "make_images failed"; exit 1; }
}
finish() {
    [ $FAILS -eq 0 ] || { echo "$FAILS failure(s)"; exit 1; }
    echo "all passed"
    exit 0
}
