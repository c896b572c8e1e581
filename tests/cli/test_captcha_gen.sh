#!/bin/sh
# Tests captcha-gen (train/captcha_gen.c): determinism per seed, label file names, PNG validity
# and size (decoded independently of cairo by Python's zlib), and bad options.
# Usage: test_captcha_gen.sh PATH/TO/captcha-gen
set -u
GEN=${1:?usage: $0 PATH/TO/captcha-gen}
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "SKIP: python3 not found (needed to decode the PNG files)"
    exit 77
fi
if ! fc-list : family | grep -q 'DejaVu Sans'; then
    echo "SKIP: font family 'DejaVu Sans' not installed (Debian fonts-dejavu-core)"
    exit 77
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
FAILS=0
fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}

# --- same seed twice: same file names, byte-identical files ---
"$GEN" --out "$T/a" --count 20 --seed 7 --font 'DejaVu Sans' >/dev/null || fail "run a"
"$GEN" --out "$T/b" --count 20 --seed 7 --font 'DejaVu Sans' >/dev/null || fail "run b"
[ "$(ls "$T/a" | wc -l)" -eq 20 ] || fail "expected 20 files in a, got $(ls "$T/a" | wc -l)"
[ "$(ls "$T/a")" = "$(ls "$T/b")" ] || fail "same seed gave different file names"
for f in "$T"/a/*.png; do
    cmp -s "$f" "$T/b/$(basename "$f")" || fail "same seed gave different bytes: $(basename "$f")"
done
# No temporary files left behind.
[ -z "$(ls -A "$T/a" | grep -v '\.png$')" ] || fail "non-PNG files left in a: $(ls -A "$T/a")"

# --- a different seed: different labels and different image bytes ---
"$GEN" --out "$T/c" --count 20 --seed 8 --font 'DejaVu Sans' >/dev/null || fail "run c"
[ "$(ls "$T/a")" != "$(ls "$T/c")" ] || fail "seeds 7 and 8 gave the same file names"
sum_a=$(cat "$T"/a/*.png | cksum)
sum_c=$(cat "$T"/c/*.png | cksum)
[ "$sum_a" != "$sum_c" ] || fail "seeds 7 and 8 gave the same bytes"

# --- image i depends only on (seed, i): 10 images are a subset of the 20, byte for byte ---
"$GEN" --out "$T/d" --count 10 --seed 7 --font 'DejaVu Sans' >/dev/null || fail "run d"
[ "$(ls "$T/d" | wc -l)" -eq 10 ] || fail "expected 10 files in d"
for f in "$T"/d/*.png; do
    cmp -s "$f" "$T/a/$(basename "$f")" || fail "count 10 is not a prefix of count 20: $(basename "$f")"
done

# --- labels, sizes and PNG decoding, checked in Python (zlib, no cairo) ---
"$GEN" --out "$T/e" --count 30 --seed 3 --length 4-6 --charset 'xk7Q-' --size 160x40 \
    --font 'DejaVu Serif' --font 'DejaVu Sans' >/dev/null || fail "run e"
# Charset of 2 and length 1: 12 images can only be labels a and b, so most repeat.
"$GEN" --out "$T/f" --count 12 --seed 5 --length 1 --charset ab >/dev/null || fail "run f (default fonts)"
"$PY" - "$T" <<'PYEOF' || fail "label / PNG checks (see above)"
import os, re, struct, sys, zlib
root = sys.argv[1]
bad = []

def decode_png(path):
    """Returns (width, height, colour type, bit depth) after checking every chunk CRC and
    inflating the image data to exactly the expected size with valid filter bytes."""
    data = open(path, 'rb').read()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise ValueError('no PNG signature')
    pos, idat, ihdr = 8, b'', None
    while pos < len(data):
        n, = struct.unpack('>I', data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            raise ValueError('bad CRC in %r chunk' % kind)
        if kind == b'IHDR':
            ihdr = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat += body
        elif kind == b'IEND':
            break
        pos += 12 + n
    w, h, depth, ctype = ihdr[0], ihdr[1], ihdr[2], ihdr[3]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    row = 1 + w * channels * depth // 8
    if len(raw) != h * row:
        raise ValueError('image data is %d bytes, expected %d' % (len(raw), h * row))
    if any(raw[y * row] > 4 for y in range(h)):
        raise ValueError('invalid filter byte')
    return w, h, ctype, depth

def check_dir(d, count, charset, lmin, lmax, size):
    names = sorted(os.listdir(os.path.join(root, d)))
    if len(names) != count:
        bad.append('%s: %d files, expected %d' % (d, len(names), count))
    per_label = {}
    for name in names:
        m = re.fullmatch(r'([^_]+)(?:_([0-9]+))?\.png', name)
        if not m:
            bad.append('%s: bad file name %s' % (d, name))
            continue
        label = m.group(1)
        if not lmin <= len(label) <= lmax or any(c not in charset for c in label):
            bad.append('%s: label %r not %d-%d chars of %r' % (d, label, lmin, lmax, charset))
        per_label.setdefault(label, []).append(int(m.group(2) or 0))
        try:
            w, h, ctype, depth = decode_png(os.path.join(root, d, name))
            if (w, h) != size or depth != 8:
                bad.append('%s: %s is %dx%d depth %d, expected %dx%d depth 8'
                           % (d, name, w, h, depth, size[0], size[1]))
        except Exception as e:
            bad.append('%s: %s does not decode: %s' % (d, name, e))
    # A label drawn k times is LABEL.png, LABEL_1.png ... LABEL_(k-1).png.
    for label, suffixes in per_label.items():
        if sorted(suffixes) != list(range(len(suffixes))):
            bad.append('%s: label %r has suffixes %s' % (d, label, sorted(suffixes)))
    return per_label

check_dir('a', 20, '0123456789abcdefghijklmnopqrstuvwxyz', 5, 5, (200, 50))
lens = {len(l) for l in check_dir('e', 30, 'xk7Q-', 4, 6, (160, 40))}
if len(lens) < 2:
    bad.append('e: --length 4-6 gave only lengths %s in 30 images' % lens)
f = check_dir('f', 12, 'ab', 1, 1, (200, 50))
if sum(len(v) for v in f.values()) != 12 or set(f) - {'a', 'b'}:
    bad.append('f: labels %s' % f)
for b in bad:
    print('FAIL:', b)
sys.exit(1 if bad else 0)
PYEOF

# --- --help lists every option with its default ---
help=$("$GEN" --help) || fail "--help exit status $?"
for s in --out --count --length --charset --size --seed --font --help \
    'default: 5' 'default: 0123456789abcdefghijklmnopqrstuvwxyz' 'default: 200x50' \
    'default: 1' 'DejaVu Sans'; do
    printf '%s' "$help" | grep -q -e "$s" || fail "--help does not mention '$s'"
done

# --- bad input: expected exit status and a message naming the option ---
# expect STATUS OPTION-NAME-IN-MESSAGE ARGS...
expect() {
    want=$1
    name=$2
    shift 2
    "$GEN" "$@" >"$T/out" 2>"$T/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "'$*': exit status $got, expected $want"
    grep -q -e "$name" "$T/err" || fail "'$*': message does not name $name: $(cat "$T/err")"
}
O="$T/bad"
expect 2 --count --out "$O" --count 0
expect 2 --count --out "$O" --count abc
expect 2 --count --out "$O" --count -3
expect 2 --count --out "$O" --count 5x
expect 2 --count --out "$O"
expect 2 --out --count 3
expect 2 --length --out "$O" --count 3 --length 0
expect 2 --length --out "$O" --count 3 --length 6-4
expect 2 --length --out "$O" --count 3 --length 3-
expect 2 --length --out "$O" --count 3 --length 999
# 33 is one more than a model can read (CAPTCHA_MAX_LENGTH)
expect 2 --length --out "$O" --count 3 --length 33
expect 2 --length --out "$O" --count 3 --length 2-33
expect 2 --charset --out "$O" --count 3 --charset ''
expect 2 --charset --out "$O" --count 3 --charset 'ab/c'
expect 2 --charset --out "$O" --count 3 --charset 'ab_c'
expect 2 --charset --out "$O" --count 3 --charset 'aba'
# '.' could start a file name, which the folder readers skip as hidden
expect 2 "--charset '.ab': '.' at position 0" --out "$O" --count 3 --charset '.ab'
expect 2 "--charset 'a.b': '.' at position 1" --out "$O" --count 3 --charset 'a.b'
expect 2 --size --out "$O" --count 3 --size 5x5
expect 2 --size --out "$O" --count 3 --size 100000x50
expect 2 --size --out "$O" --count 3 --size 200by50
expect 2 --seed --out "$O" --count 3 --seed -1
expect 2 --font --out "$O" --count 3 --font 'No Such Family Qzx'
expect 2 --bogus --out "$O" --count 3 --bogus
[ ! -e "$O" ] || fail "a usage error still created --out"
# --out below a regular file cannot be created, even by root.
: >"$T/file"
expect 1 --out --out "$T/file/sub" --count 3

if [ "$FAILS" -ne 0 ]; then
    echo "$FAILS check(s) failed"
    exit 1
fi
echo "all captcha-gen checks passed"
