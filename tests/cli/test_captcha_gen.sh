#!/bin/sh
# Tests captcha-gen (train/captcha_gen.c): determinism per seed, label file names, PNG validity
# and size (decoded independently of cairo by Python's zlib), existing files kept unless
# --overwrite, write errors, and bad options.
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
# expect STATUS TEXT-IN-MESSAGE ARGS...: runs captcha-gen ARGS (stdout in $T/out, stderr in
# $T/err) and checks its exit status and that stderr has TEXT (a grep pattern).
expect() {
    want=$1
    name=$2
    shift 2
    "$GEN" "$@" >"$T/out" 2>"$T/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "'$*': exit status $got, expected $want"
    grep -q -e "$name" "$T/err" || fail "'$*': message does not name $name: $(cat "$T/err")"
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

# --- files already in --out are kept: a run that would replace any writes nothing ---
# sums DIR: checksum, size and name of every file in DIR, hidden ones too
sums() {
    (cd "$1" && find . -type f -exec cksum {} + | LC_ALL=C sort -k 3)
}
# Charset ab, length 2: 5 images per seed can only be 4 labels, so seeds 1 and 2 share names.
"$GEN" --out "$T/g" --count 5 --charset ab --length 2 --seed 1 >/dev/null || fail "run g seed 1"
"$GEN" --out "$T/g2" --count 5 --charset ab --length 2 --seed 2 >/dev/null || fail "run g2 seed 2"
before=$(sums "$T/g")
expect 2 "$T/g/[^ ]*\.png already exists" --out "$T/g" --count 5 --charset ab --length 2 --seed 2
grep -q -e '--overwrite' "$T/err" || fail "refusal does not mention --overwrite: $(cat "$T/err")"
[ ! -s "$T/out" ] || fail "refused run printed on stdout: $(cat "$T/out")"
[ "$(sums "$T/g")" = "$before" ] || fail "a refused run changed the folder"
# Same seed again without --overwrite: refused too (every name exists), nothing changed.
expect 2 '5 of the 5 files' --out "$T/g" --count 5 --charset ab --length 2 --seed 1
[ "$(sums "$T/g")" = "$before" ] || fail "a refused run (same seed) changed the folder"

# A user's own file named like a label this run draws is kept (and nothing else is written).
first=$(cd "$T/g2" && set -- *.png && echo "$1")
mkdir "$T/u"
echo "user data" >"$T/u/$first"
expect 2 "$T/u/$first already exists" --out "$T/u" --count 5 --charset ab --length 2 --seed 2
[ "$(cat "$T/u/$first")" = "user data" ] || fail "the user's $first was replaced"
[ "$(ls -A "$T/u")" = "$first" ] || fail "a refused run wrote files: $(ls -A "$T/u")"

# --overwrite replaces those files: each is then the seed's image, byte for byte; files of
# other names are not touched.
"$GEN" --out "$T/u" --count 5 --charset ab --length 2 --seed 2 --overwrite >"$T/out" ||
    fail "--overwrite over a user file"
grep -q '(1 replaced file of the same name)' "$T/out" || fail "--overwrite output: $(cat "$T/out")"
[ "$(sums "$T/u")" = "$(sums "$T/g2")" ] || fail "--overwrite did not give seed 2's files"
# a folder named like an image cannot be replaced, not even with --overwrite: refused
# before any file is written
"$GEN" --out "$T/dirclash" --count 5 --charset ab --length 2 --seed 2 >/dev/null || fail "run d"
dirname_=$(ls "$T/dirclash" | head -n 1)
rm "$T/dirclash/$dirname_"
mkdir "$T/dirclash/$dirname_"
before=$(sums "$T/dirclash")
expect 2 "$T/dirclash/$dirname_ exists and is not a file (a directory)" \
    --out "$T/dirclash" --count 5 --charset ab --length 2 --seed 2 --overwrite
[ "$(sums "$T/dirclash")" = "$before" ] || fail "--overwrite over a folder changed files"
cp -r "$T/g" "$T/g1"
"$GEN" --out "$T/g" --count 5 --charset ab --length 2 --seed 2 --overwrite >/dev/null ||
    fail "--overwrite seed 2 into seed 1's folder"
for f in "$T"/g2/*.png; do
    f=$(basename "$f")
    cmp -s "$T/g/$f" "$T/g2/$f" || fail "--overwrite did not replace $f with seed 2's image"
done
for f in "$T"/g1/*.png; do
    f=$(basename "$f")
    [ -e "$T/g2/$f" ] || cmp -s "$T/g/$f" "$T/g1/$f" || fail "--overwrite changed $f, not its name"
done
# --overwrite with the same seed rewrites identical bytes.
before=$(sums "$T/g2")
"$GEN" --out "$T/g2" --count 5 --charset ab --length 2 --seed 2 --overwrite >/dev/null ||
    fail "--overwrite with the same seed"
[ "$(sums "$T/g2")" = "$before" ] || fail "--overwrite with the same seed changed bytes"
# ... and a larger --count extends a smaller run byte for byte (d: seed 7, 10 of a's 20).
"$GEN" --out "$T/d2" --count 10 --seed 7 --font 'DejaVu Sans' >/dev/null || fail "run d2"
"$GEN" --out "$T/d2" --count 20 --seed 7 --font 'DejaVu Sans' --overwrite >/dev/null ||
    fail "--overwrite --count 20 over --count 10"
[ "$(sums "$T/d2")" = "$(sums "$T/a")" ] || fail "--count 20 over --count 10 differs from a fresh 20"

# One image: "wrote 1 image", not "1 images".
"$GEN" --out "$T/one" --count 1 >"$T/out" || fail "run one"
grep -q 'wrote 1 image of' "$T/out" || fail "count 1 output: $(cat "$T/out")"

# A failed write says why in the OS's words (here the file size limit; a full disk gives "No
# space left on device"), keeps no partial or temporary file, and exits 1.
(
    trap '' XFSZ
    ulimit -f 2 # 1 KiB: less than one PNG
    exec "$GEN" --out "$T/full" --count 3 >/dev/null 2>"$T/err"
)
got=$?
[ "$got" -eq 1 ] || fail "write past the file size limit: exit status $got, expected 1"
grep -q -e "writing $T/full/.*\.png failed: File too large" "$T/err" ||
    fail "write error does not say the OS reason: $(cat "$T/err")"
[ -z "$(ls -A "$T/full")" ] || fail "a failed write left files: $(ls -A "$T/full")"

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
for s in --out --count --length --charset --size --seed --font --overwrite --help \
    'default: 5' 'default: 0123456789abcdefghijklmnopqrstuvwxyz' 'default: 200x50' \
    'default: 1' 'DejaVu Sans'; do
    printf '%s' "$help" | grep -q -e "$s" || fail "--help does not mention '$s'"
done

# --- bad input: expected exit status and a message naming the option ---
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
