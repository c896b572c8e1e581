/*
 * captcha-gen: writes labelled captcha images (PNG, named by label) for training and tests.
 *
 * Style matched to the shared captcha-v2 set (200x50 RGBA): a grey background that lightens
 * from left to right, dark bold characters with a speckled ("hairy") edge, one thick
 * strike-through line with a hook at its start, a light blur. On top of that: per-character
 * rotation, offset and scale, a varying baseline, extra dots and a slight background tint.
 *
 * Each character is one pango layout (font family by name, checked with fontconfig since pango
 * silently substitutes a missing family), drawn into an A8 mask with its own cairo transform.
 *
 * Determinism: all randomness comes from xoshiro256** seeded through splitmix64 from
 * (--seed, image index), so image i depends only on the seed and i: the same options give
 * byte-identical files, and a larger --count extends a smaller one. Hinting is off so glyph
 * outlines do not depend on the transform. Output still depends on the installed font files.
 *
 * Files already in --out are never replaced without --overwrite: the file names follow from the
 * options alone, so before writing anything a first pass lists them and refuses the run when any
 * exists; each image is written to a fresh temporary file (mkstemp) and moved to its name with
 * a rename that does not replace a file that appeared since.
 *
 * Exit status: 0 success, 1 runtime error (output directory, fonts, writing), 2 usage error or
 * a file to write that exists already (without --overwrite).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "captcha_config.h"
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <pango/pangocairo.h>

#define EXIT_USAGE 2
#define EXIT_RUNTIME 1

#define DEFAULT_CHARSET "0123456789abcdefghijklmnopqrstuvwxyz"
#define DEFAULT_LENGTH 5
#define DEFAULT_WIDTH 200
#define DEFAULT_HEIGHT 50
#define DEFAULT_SEED 1
#define MAX_COUNT 10000000L
/* The longest code a model can have (captcha_config.h): longer labels could not be
 * trained on. */
#define MAX_LENGTH CAPTCHA_MAX_LENGTH
#define MIN_SIDE 16
#define MAX_SIDE 4096

/* Families tried when no --font is given; those that fontconfig has installed are used. */
static const char *const default_fonts[] = {
    "DejaVu Sans",      "DejaVu Sans Condensed", "DejaVu Serif",     "Liberation Sans",
    "Liberation Serif", "Liberation Mono",       "DejaVu Sans Mono",
};
#define N_DEFAULT_FONTS (sizeof(default_fonts) / sizeof(default_fonts[0]))

static const char *prog = "captcha-gen";

struct options {
    const char *out_dir;
    long count;
    int len_min, len_max;
    const char *charset;
    int width, height;
    uint64_t seed;
    const char **fonts;
    size_t n_fonts;
    int overwrite; /* --overwrite: files of the names to write may be replaced */
};

/* ---- PRNG: xoshiro256** (Blackman & Vigna), seeded with splitmix64 ---- */

struct rng {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed;
    uint64_t mix = splitmix64(&x) ^ stream;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&mix);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_range(struct rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rng_unit(r);
}

/* Uniform integer in [0, n), n > 0, without modulo bias (rejection). */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do {
        v = rng_next(r);
    } while (v >= limit);
    return v % n;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s --out DIR --count N [OPTION]...\n"
            "Write N labelled captcha images as PNG files DIR/LABEL.png (a repeated label gets\n"
            "a suffix: LABEL_1.png, LABEL_2.png, ...; the label is the name before '_').\n"
            "The names follow from the options (suffixes count this run's labels only). Before\n"
            "writing anything, the run checks them all: if any exists in DIR, nothing is\n"
            "written and the exit status is 2, unless --overwrite is given.\n"
            "\n"
            "  -o, --out DIR          output directory, created if missing (required)\n"
            "  -n, --count N          number of images, 1 to %ld (required)\n"
            "  -l, --length N|MIN-MAX label length, or a range to draw from, 1 to %d\n"
            "                         (default: %d)\n"
            "  -c, --charset STR      characters labels are drawn from; printable ASCII, no\n"
            "                         space, '/', '\\', '_', '.' or repeats\n"
            "                         (default: %s)\n"
            "  -s, --size WxH         image size in pixels, each side %d to %d (default: %dx%d)\n"
            "  -S, --seed N           seed of the generator; same seed and options give\n"
            "                         byte-identical files (default: %d)\n"
            "  -f, --font NAME        font family by fontconfig name, repeat for several; one\n"
            "                         is drawn per image (default: those installed of",
            prog, MAX_COUNT, MAX_LENGTH, DEFAULT_LENGTH, DEFAULT_CHARSET, MIN_SIDE, MAX_SIDE,
            DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_SEED);
    for (size_t i = 0; i < N_DEFAULT_FONTS; i++)
        fprintf(f, "%s'%s'",
                i == 0 ? "\n                         "
                       : (i % 3 ? ", " : ",\n                         "),
                default_fonts[i]);
    fprintf(f, ")\n"
               "      --overwrite        replace files in DIR that have the name of an image of\n"
               "                         this run (other files are never touched); the same\n"
               "                         options then rewrite identical bytes\n"
               "  -h, --help             show this help and exit\n"
               "\n"
               "Exit status: 0 on success, 1 on a runtime error, 2 on a usage error or when a\n"
               "file to write exists already in DIR (without --overwrite).\n");
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
    exit(EXIT_USAGE);
}

/* Parses a whole decimal string (digits only, no sign or spaces) into *out. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static void parse_length(const char *arg, struct options *o)
{
    const char *dash = strchr(arg, '-');
    uint64_t lo, hi;
    int ok;
    if (dash == NULL) {
        ok = parse_u64(arg, &lo) == 0;
        hi = lo;
    } else {
        char buf[32];
        size_t n = (size_t)(dash - arg);
        ok = n < sizeof(buf);
        if (ok) {
            memcpy(buf, arg, n);
            buf[n] = '\0';
            ok = parse_u64(buf, &lo) == 0 && parse_u64(dash + 1, &hi) == 0;
        }
    }
    if (!ok || lo < 1 || hi > MAX_LENGTH || lo > hi)
        usage_error("--length '%s': expected N or MIN-MAX with 1 <= MIN <= MAX <= %d", arg,
                    MAX_LENGTH);
    o->len_min = (int)lo;
    o->len_max = (int)hi;
}

static void check_charset(const char *cs)
{
    size_t n = strlen(cs);
    if (n == 0)
        usage_error("--charset '': the charset is empty");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)cs[i];
        if (c <= ' ' || c > '~')
            usage_error("--charset '%s': byte 0x%02x at position %zu is not printable ASCII "
                        "(space and control characters cannot be in a label)",
                        cs, c, i);
        if (c == '/' || c == '\\' || c == '_')
            usage_error("--charset '%s': '%c' at position %zu cannot be in a label ('/' and "
                        "'\\' are path separators, '_' separates the label from its suffix)",
                        cs, c, i);
        if (c == '.')
            usage_error("--charset '%s': '.' at position %zu cannot be in a label (a file name "
                        "starting with '.' is hidden, and captcha-train and captcha-predict "
                        "skip hidden files)",
                        cs, i);
        if (memchr(cs, c, i) != NULL)
            usage_error("--charset '%s': '%c' appears more than once", cs, c);
    }
}

static void parse_size(const char *arg, struct options *o)
{
    const char *x = strchr(arg, 'x');
    uint64_t w = 0, h = 0;
    int ok = x != NULL && (size_t)(x - arg) < 16;
    if (ok) {
        char buf[16];
        memcpy(buf, arg, (size_t)(x - arg));
        buf[x - arg] = '\0';
        ok = parse_u64(buf, &w) == 0 && parse_u64(x + 1, &h) == 0;
    }
    if (!ok)
        usage_error("--size '%s': expected WxH in pixels, e.g. %dx%d", arg, DEFAULT_WIDTH,
                    DEFAULT_HEIGHT);
    if (w < MIN_SIDE || w > MAX_SIDE || h < MIN_SIDE || h > MAX_SIDE)
        usage_error("--size '%s': width and height must each be from %d to %d pixels", arg,
                    MIN_SIDE, MAX_SIDE);
    o->width = (int)w;
    o->height = (int)h;
}

/*
 * Whether fontconfig has the family installed: pango substitutes a missing family without a
 * word, so match it the way pango will and compare the family names of the match.
 * On a mismatch, *substitute (when non-NULL) receives the family that would be used instead.
 */
static int font_installed(const char *family, char *substitute, size_t sub_size)
{
    FcPattern *pat = FcPatternCreate();
    int found = 0;
    if (substitute && sub_size)
        substitute[0] = '\0';
    if (pat == NULL)
        return 0;
    FcPatternAddString(pat, FC_FAMILY, (const FcChar8 *)family);
    FcConfigSubstitute(NULL, pat, FcMatchPattern);
    FcDefaultSubstitute(pat);
    FcResult res;
    FcPattern *match = FcFontMatch(NULL, pat, &res);
    if (match != NULL) {
        FcChar8 *name;
        for (int i = 0; FcPatternGetString(match, FC_FAMILY, i, &name) == FcResultMatch; i++) {
            if (i == 0 && substitute && sub_size)
                snprintf(substitute, sub_size, "%s", (const char *)name);
            if (strcasecmp((const char *)name, family) == 0)
                found = 1;
        }
        FcPatternDestroy(match);
    }
    FcPatternDestroy(pat);
    return found;
}

/* getopt value of --overwrite, which has no short form */
#define OPT_OVERWRITE 256

static void parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},
        {"count", required_argument, NULL, 'n'},
        {"length", required_argument, NULL, 'l'},
        {"charset", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"seed", required_argument, NULL, 'S'},
        {"font", required_argument, NULL, 'f'},
        {"overwrite", no_argument, NULL, OPT_OVERWRITE}, /* no short form */
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *count_arg = NULL;
    int c;

    *o = (struct options){
        .count = 0,
        .len_min = DEFAULT_LENGTH,
        .len_max = DEFAULT_LENGTH,
        .charset = DEFAULT_CHARSET,
        .width = DEFAULT_WIDTH,
        .height = DEFAULT_HEIGHT,
        .seed = DEFAULT_SEED,
    };
    o->fonts = calloc((size_t)argc + N_DEFAULT_FONTS, sizeof(*o->fonts));
    if (o->fonts == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(EXIT_RUNTIME);
    }

    while ((c = getopt_long(argc, argv, "o:n:l:c:s:S:f:h", longopts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'o':
            if (optarg[0] == '\0')
                usage_error("--out '': the output directory name is empty");
            o->out_dir = optarg;
            break;
        case 'n':
            count_arg = optarg;
            if (parse_u64(optarg, &v) != 0 || v < 1 || v > (uint64_t)MAX_COUNT)
                usage_error("--count '%s': expected an integer from 1 to %ld", optarg, MAX_COUNT);
            o->count = (long)v;
            break;
        case 'l': parse_length(optarg, o); break;
        case 'c':
            check_charset(optarg);
            o->charset = optarg;
            break;
        case 's': parse_size(optarg, o); break;
        case 'S':
            if (parse_u64(optarg, &v) != 0)
                usage_error("--seed '%s': expected an unsigned 64-bit decimal integer", optarg);
            o->seed = v;
            break;
        case 'f': o->fonts[o->n_fonts++] = optarg; break;
        case OPT_OVERWRITE: o->overwrite = 1; break;
        case 'h': usage(stdout); exit(0);
        default: /* getopt_long has printed what was wrong */
            fprintf(stderr, "Try '%s --help' for more information.\n", prog);
            exit(EXIT_USAGE);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (o->out_dir == NULL)
        usage_error("--out DIR is required");
    if (count_arg == NULL)
        usage_error("--count N is required");

    for (size_t i = 0; i < o->n_fonts; i++) {
        char sub[256];
        if (!font_installed(o->fonts[i], sub, sizeof(sub)))
            usage_error("--font '%s': no installed font family of that name (fontconfig "
                        "would substitute '%s'); list the installed ones with fc-list : family",
                        o->fonts[i], sub);
    }
    if (o->n_fonts == 0) {
        for (size_t i = 0; i < N_DEFAULT_FONTS; i++)
            if (font_installed(default_fonts[i], NULL, 0))
                o->fonts[o->n_fonts++] = default_fonts[i];
        if (o->n_fonts == 0) {
            fprintf(stderr, "%s: none of the default font families is installed", prog);
            for (size_t i = 0; i < N_DEFAULT_FONTS; i++)
                fprintf(stderr, "%s'%s'", i ? ", " : " (", default_fonts[i]);
            fprintf(stderr, "); install fonts-dejavu-core or name one with --font\n");
            exit(EXIT_RUNTIME);
        }
    }
}

/* ---- output directory and files ---- */

/* mkdir -p: creates every missing component of path. Returns 0 or -1 with errno set. */
static int make_dirs(const char *path)
{
    char *p = strdup(path);
    if (p == NULL)
        return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0777);
    free(p);
    if (rc != 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* Where cairo's PNG stream goes: the file, and the errno of a failed write (cairo itself only
 * reports CAIRO_STATUS_WRITE_ERROR, which would hide e.g. "No space left on device"). */
struct png_sink {
    FILE *f;
    int err;
};

static cairo_status_t write_stream(void *closure, const unsigned char *data, unsigned int len)
{
    struct png_sink *s = closure;
    errno = 0;
    if (fwrite(data, 1, len, s->f) == len)
        return CAIRO_STATUS_SUCCESS;
    s->err = errno != 0 ? errno : EIO;
    return CAIRO_STATUS_WRITE_ERROR;
}

/*
 * Moves the finished temporary file tmp to dst. Unless replace, an existing dst is kept and
 * this fails with EEXIST, also for a file that appeared after the check at the start:
 * renameat2(RENAME_NOREPLACE), or link + unlink on a file system without it, or, without hard
 * links either, a check right before the rename. Returns 0 or -1 with errno set.
 */
static int move_into_place(const char *tmp, const char *dst, int replace)
{
    if (replace)
        return rename(tmp, dst);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -1;
    if (link(tmp, dst) == 0) {
        if (unlink(tmp) != 0)
            fprintf(stderr, "%s: warning: cannot remove the temporary file %s: %s\n", prog, tmp,
                    strerror(errno));
        return 0;
    }
    if (errno != EPERM && errno != ENOTSUP && errno != ENOSYS)
        return -1;
    struct stat st;
    if (lstat(dst, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(tmp, dst);
}

/*
 * Writes the surface as DIR/NAME through a new temporary file in DIR (mkstemp, which never
 * opens an existing file) and a rename that replaces an existing DIR/NAME only if replace.
 */
static int write_png(cairo_surface_t *surf, const char *dir, const char *name, mode_t file_mode,
                     int replace)
{
    size_t n = strlen(dir) + strlen(name) + 32;
    char *tmp = malloc(n), *dst = malloc(n);
    int ok = 0, fd = -1;
    struct png_sink sink = {NULL, 0};
    if (tmp == NULL || dst == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        goto out;
    }
    snprintf(tmp, n, "%s/.captcha-gen-XXXXXX", dir);
    snprintf(dst, n, "%s/%s", dir, name);
    fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "%s: --out '%s': cannot create a file there: %s\n", prog, dir,
                strerror(errno));
        goto out;
    }
    if (fchmod(fd, file_mode) != 0 || (sink.f = fdopen(fd, "wb")) == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    cairo_status_t st = cairo_surface_write_to_png_stream(surf, write_stream, &sink);
    errno = 0;
    int close_rc = fclose(sink.f);
    int close_err = errno;
    if (st != CAIRO_STATUS_SUCCESS || close_rc != 0) {
        const char *why = sink.err != 0   ? strerror(sink.err)
                          : close_rc != 0 ? strerror(close_err)
                                          : cairo_status_to_string(st);
        fprintf(stderr, "%s: writing %s failed: %s\n", prog, dst, why);
        unlink(tmp);
        goto out;
    }
    if (move_into_place(tmp, dst, replace) != 0) {
        if (errno == EEXIST)
            fprintf(stderr,
                    "%s: %s exists now but did not when the run started (another program, or a "
                    "file system that ignores case); kept it and stopped\n",
                    prog, dst);
        else
            fprintf(stderr, "%s: renaming %s to %s failed: %s\n", prog, tmp, dst, strerror(errno));
        unlink(tmp);
        goto out;
    }
    ok = 1;
out:
    free(tmp);
    free(dst);
    return ok ? 0 : -1;
}

/* ---- label bookkeeping: how often each label was drawn, for the _N suffix ---- */

struct label_count {
    char *label;
    unsigned long n;
};

struct label_table {
    struct label_count *slots;
    size_t mask;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static int table_init(struct label_table *t, long count)
{
    size_t cap = 16;
    while (cap < (size_t)count * 2)
        cap *= 2;
    t->slots = calloc(cap, sizeof(*t->slots));
    t->mask = cap - 1;
    return t->slots ? 0 : -1;
}

/* Returns how many times label was seen before, and records it; ULONG_MAX when out of memory. */
static unsigned long table_bump(struct label_table *t, const char *label)
{
    size_t i = (size_t)fnv1a(label) & t->mask;
    while (t->slots[i].label != NULL) {
        if (strcmp(t->slots[i].label, label) == 0)
            return t->slots[i].n++;
        i = (i + 1) & t->mask;
    }
    t->slots[i].label = strdup(label);
    if (t->slots[i].label == NULL)
        return ULONG_MAX;
    t->slots[i].n = 1;
    return 0;
}

static void table_free(struct label_table *t)
{
    if (!t->slots)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        free(t->slots[i].label);
    free(t->slots);
}

/* ---- the images of a run: labels, fonts and file names ---- */

/* Longest file name: a label, '_', a suffix and ".png". */
#define NAME_SIZE (MAX_LENGTH + 32)

struct image_plan {
    char label[MAX_LENGTH + 1];
    size_t len;
    const char *family;
    char name[NAME_SIZE];
};

/*
 * Seeds g for image i and draws its label and font; render() continues from g. t counts the
 * labels drawn so far for the _N suffix: calling this for i = 0, 1, ... with one table gives
 * the same names in every pass. Returns 0, or -1 when out of memory.
 */
static int plan_image(const struct options *o, long i, struct label_table *t, struct rng *g,
                      struct image_plan *p)
{
    const size_t n_chars = strlen(o->charset);
    rng_seed(g, o->seed, (uint64_t)i);
    p->len = (size_t)o->len_min + rng_below(g, (uint64_t)(o->len_max - o->len_min + 1));
    for (size_t k = 0; k < p->len; k++)
        p->label[k] = o->charset[rng_below(g, n_chars)];
    p->label[p->len] = '\0';
    p->family = o->fonts[rng_below(g, o->n_fonts)];

    unsigned long seen = table_bump(t, p->label);
    if (seen == ULONG_MAX)
        return -1;
    if (seen == 0)
        snprintf(p->name, sizeof(p->name), "%s.png", p->label);
    else
        snprintf(p->name, sizeof(p->name), "%s_%lu.png", p->label, seen);
    return 0;
}

static const char *plural(long n)
{
    return n == 1 ? "" : "s";
}

/*
 * Counts the files of this run that exist in --out already (anything of that name: a file, a
 * link, even a broken one, a folder), into *n_existing, and names the first in first
 * (DIR/NAME). Returns 0, or EXIT_RUNTIME after a message.
 */
static int count_existing(const struct options *o, long *n_existing, char *first, size_t first_size)
{
    struct label_table t;
    int rc = 0;
    *n_existing = 0;
    if (table_init(&t, o->count) != 0) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return EXIT_RUNTIME;
    }
    size_t n = strlen(o->out_dir) + NAME_SIZE + 2;
    char *path = malloc(n);
    for (long i = 0; i < o->count && rc == 0; i++) {
        struct rng g;
        struct image_plan p;
        if (path == NULL || plan_image(o, i, &t, &g, &p) != 0) {
            fprintf(stderr, "%s: out of memory\n", prog);
            rc = EXIT_RUNTIME;
            break;
        }
        snprintf(path, n, "%s/%s", o->out_dir, p.name);
        struct stat st;
        if (lstat(path, &st) == 0) {
            if ((*n_existing)++ == 0)
                snprintf(first, first_size, "%s", path);
            /* a folder (or a FIFO, a device) cannot be replaced by an image, not even
             * with --overwrite: refused before any file is written */
            if (S_ISDIR(st.st_mode) || (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))) {
                fprintf(stderr,
                        "%s: %s exists and is not a file (%s): no image can replace it; "
                        "nothing was written\n",
                        prog, path, S_ISDIR(st.st_mode) ? "a directory" : "a special file");
                rc = EXIT_USAGE;
            }
        } else if (errno != ENOENT) {
            fprintf(stderr, "%s: cannot check whether %s exists: %s\n", prog, path,
                    strerror(errno));
            rc = EXIT_RUNTIME;
        }
    }
    free(path);
    table_free(&t);
    return rc;
}

/* ---- rendering ---- */

struct renderer {
    int w, h;
    cairo_surface_t *image; /* ARGB32, opaque: the captcha */
    cairo_surface_t *mask;  /* A8: coverage of the characters */
    unsigned char *scratch; /* copy of the mask for the edge speckle */
    float *blur_tmp;        /* w*h*3 floats for the separable blur */
    PangoFontMap *font_map;
    PangoContext *pango;
};

static int renderer_init(struct renderer *r, int w, int h)
{
    memset(r, 0, sizeof(*r));
    r->w = w;
    r->h = h;
    r->image = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
    r->mask = cairo_image_surface_create(CAIRO_FORMAT_A8, w, h);
    if (cairo_surface_status(r->image) || cairo_surface_status(r->mask))
        return -1;
    r->scratch = malloc((size_t)cairo_image_surface_get_stride(r->mask) * (size_t)h);
    r->blur_tmp = malloc(sizeof(float) * 3 * (size_t)w * (size_t)h);
    if (r->scratch == NULL || r->blur_tmp == NULL)
        return -1;
    r->font_map = pango_cairo_font_map_new();
    r->pango = pango_font_map_create_context(r->font_map);
    /* No hinting: outlines then scale and rotate exactly, independent of the pixel grid. */
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
    cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_NONE);
    cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
    pango_cairo_context_set_font_options(r->pango, fo);
    cairo_font_options_destroy(fo);
    return 0;
}

static void renderer_free(struct renderer *r)
{
    if (r->pango)
        g_object_unref(r->pango);
    if (r->font_map)
        g_object_unref(r->font_map);
    cairo_surface_destroy(r->image);
    cairo_surface_destroy(r->mask);
    free(r->scratch);
    free(r->blur_tmp);
}

/*
 * Layout font size in pixels. Every layout uses this one size and the image's size comes from
 * the cairo transform: pango then resolves each family once (a new size or transform per layout
 * would mean a fontconfig match per character, which dominated the run time).
 */
#define LAYOUT_FONT_PX 40.0

/* Draws the characters of label into r->mask (cleared first). */
static void draw_characters(struct renderer *r, struct rng *g, const char *label, size_t len,
                            const char *family)
{
    const double W = r->w, H = r->h;
    cairo_t *cr = cairo_create(r->mask);
    cairo_set_operator(cr, CAIRO_OPERATOR_CLEAR);
    cairo_paint(cr);
    cairo_set_operator(cr, CAIRO_OPERATOR_OVER);
    cairo_set_source_rgba(cr, 0, 0, 0, 1);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);

    PangoFontDescription *fd = pango_font_description_new();
    pango_font_description_set_family(fd, family);
    pango_font_description_set_weight(fd, rng_unit(g) < 0.75 ? PANGO_WEIGHT_BOLD
                                                             : PANGO_WEIGHT_SEMIBOLD);
    pango_font_description_set_absolute_size(fd, LAYOUT_FONT_PX * PANGO_SCALE);
    /* Em size in image pixels, and the factor from layout pixels to image pixels. */
    const double font_px = H * rng_range(g, 0.80, 0.94);
    const double em = font_px / LAYOUT_FONT_PX;
    /* Extra stroke around the outlines: the real set's strokes are heavier than a bold face. */
    const double embolden = H * rng_range(g, 0.0, 0.025);

    PangoLayout *layouts[MAX_LENGTH];
    PangoRectangle ink[MAX_LENGTH];
    double scale[MAX_LENGTH], sx[MAX_LENGTH], advance[MAX_LENGTH], baseline[MAX_LENGTH];
    double total = 0;
    for (size_t i = 0; i < len; i++) {
        layouts[i] = pango_layout_new(r->pango);
        pango_layout_set_font_description(layouts[i], fd);
        pango_layout_set_text(layouts[i], label + i, 1);
        pango_layout_get_pixel_extents(layouts[i], &ink[i], NULL);
        baseline[i] = (double)pango_layout_get_baseline(layouts[i]) / PANGO_SCALE;
        scale[i] = em * rng_range(g, 0.88, 1.12);
        sx[i] = rng_range(g, 0.9, 1.2); /* horizontal stretch on top of the scale */
        /* Characters touch or overlap a little, as in the real set. */
        double ink_w = ink[i].width > 0 ? ink[i].width : LAYOUT_FONT_PX * 0.3;
        advance[i] = ink_w * scale[i] * sx[i] * rng_range(g, 0.84, 1.0);
        total += advance[i];
    }
    /* Text block: starts at 12-20% of the width, ends by 80%. */
    double x0 = W * rng_range(g, 0.12, 0.20);
    double room = W * 0.80 - x0;
    double fit = total > room ? room / total : 1.0;
    double x = x0;
    double wave_amp = H * rng_range(g, 0.0, 0.05);
    double wave_freq = rng_range(g, 0.4, 1.2);
    double wave_phase = rng_range(g, 0.0, 2 * M_PI);
    double mid_y = H * rng_range(g, 0.44, 0.52);
    for (size_t i = 0; i < len; i++) {
        double s = scale[i] * fit;
        double cx = x + advance[i] * fit / 2;
        double cy = mid_y + wave_amp * sin(wave_phase + wave_freq * (double)i) +
                    H * rng_range(g, -0.03, 0.03);
        double angle = rng_range(g, -0.30, 0.30);
        cairo_save(cr);
        cairo_translate(cr, cx, cy);
        cairo_rotate(cr, angle);
        cairo_scale(cr, s * sx[i], s);
        /* Rotate about the middle of the x-height band above the baseline. */
        cairo_translate(cr, -(ink[i].x + ink[i].width / 2.0),
                        -(baseline[i] - LAYOUT_FONT_PX * 0.36));
        pango_cairo_layout_path(cr, layouts[i]);
        cairo_restore(cr); /* stroke width in image pixels, not layout pixels */
        if (embolden > 0.3) {
            cairo_fill_preserve(cr);
            cairo_set_line_width(cr, embolden);
            cairo_stroke(cr);
        } else {
            cairo_fill(cr);
        }
        x += advance[i] * fit;
        g_object_unref(layouts[i]);
    }
    pango_font_description_free(fd);
    cairo_destroy(cr);
}

/*
 * The real set's characters have a speckled edge: scattered dark pixels just outside the
 * strokes and a few light ones just inside. Adds that to the A8 mask.
 */
static void speckle_edges(struct renderer *r, struct rng *g)
{
    cairo_surface_flush(r->mask);
    unsigned char *m = cairo_image_surface_get_data(r->mask);
    const int stride = cairo_image_surface_get_stride(r->mask), w = r->w, h = r->h;
    memcpy(r->scratch, m, (size_t)stride * (size_t)h);
    const unsigned char *src = r->scratch;
    const double p_near = rng_range(g, 0.25, 0.55), p_far = p_near * 0.15, p_in = 0.12;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            int v = src[y * stride + x], max1 = 0, max2 = 0, min1 = 255;
            for (int dy = -2; dy <= 2; dy++) {
                int yy = y + dy;
                if (yy < 0 || yy >= h)
                    continue;
                for (int dx = -2; dx <= 2; dx++) {
                    int xx = x + dx;
                    if (xx < 0 || xx >= w)
                        continue;
                    int n = src[yy * stride + xx];
                    if (dx >= -1 && dx <= 1 && dy >= -1 && dy <= 1) {
                        if (n > max1)
                            max1 = n;
                        if (n < min1)
                            min1 = n;
                    }
                    if (n > max2)
                        max2 = n;
                }
            }
            if (v < 128 && max2 >= 160) {
                double p = max1 >= 160 ? p_near : p_far;
                if (rng_unit(g) < p) {
                    int nv = 160 + (int)rng_below(g, 96);
                    m[y * stride + x] = (unsigned char)(nv > v ? nv : v);
                }
            } else if (v >= 128 && min1 < 64 && rng_unit(g) < p_in) {
                m[y * stride + x] = (unsigned char)(v / 3);
            }
        }
    }
    cairo_surface_mark_dirty(r->mask);
}

/*
 * One thick line across the text like the real set's: a short steep tick at its start, then a
 * straight line bent once, ending near the right edge.
 */
static void draw_strike_line(cairo_t *cr, struct rng *g, double W, double H)
{
    double x0 = W * rng_range(g, 0.08, 0.13), y0 = H * rng_range(g, 0.08, 0.92);
    double dy = H * rng_range(g, 0.12, 0.40);
    if (y0 + dy > H * 0.95 || (y0 - dy > H * 0.05 && rng_unit(g) < 0.5))
        dy = -dy;
    double x1 = x0 + W * rng_range(g, 0.02, 0.07), y1 = y0 + dy;
    double xk = W * rng_range(g, 0.50, 0.72), yk = H * rng_range(g, 0.25, 0.80);
    double x2 = W * rng_range(g, 0.86, 0.93), y2 = H * rng_range(g, 0.15, 0.85);
    cairo_set_line_width(cr, H * rng_range(g, 0.040, 0.060));
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_move_to(cr, x0, y0);
    /* The tick: leaves steeply, then bends towards the straight part. */
    cairo_curve_to(cr, x0 + (x1 - x0) * 0.1, y0 + dy * 0.6, x1 - (x1 - x0) * 0.3, y1, x1, y1);
    cairo_line_to(cr, xk, yk);
    cairo_line_to(cr, x2, y2);
    cairo_stroke(cr);
}

/* Separable gaussian blur of the opaque ARGB32 image, sigma in pixels (kernel radius 2 sigma). */
static void blur_image(struct renderer *r, double sigma)
{
    double kd[8];
    int rad = (int)ceil(2.0 * sigma);
    if (rad < 1)
        return;
    if (rad > 7)
        rad = 7;
    double sum = 0;
    for (int k = -rad; k <= rad; k++)
        sum += kd[abs(k)] = exp(-(double)(k * k) / (2 * sigma * sigma));
    float kf[8];
    for (int k = 0; k <= rad; k++)
        kf[k] = (float)(kd[k] / sum);

    cairo_surface_flush(r->image);
    unsigned char *d = cairo_image_surface_get_data(r->image);
    const int stride = cairo_image_surface_get_stride(r->image), w = r->w, h = r->h;
    float *t = r->blur_tmp;
    /* Horizontal pass into t (3 channels, clamped edges). */
    for (int y = 0; y < h; y++) {
        const uint32_t *row = (const uint32_t *)(d + (size_t)y * stride);
        for (int x = 0; x < w; x++) {
            float acc[3] = {0, 0, 0};
            for (int k = -rad; k <= rad; k++) {
                int xx = x + k < 0 ? 0 : (x + k >= w ? w - 1 : x + k);
                uint32_t p = row[xx];
                float wk = kf[abs(k)];
                acc[0] += wk * (float)((p >> 16) & 0xff);
                acc[1] += wk * (float)((p >> 8) & 0xff);
                acc[2] += wk * (float)(p & 0xff);
            }
            float *o = t + 3 * ((size_t)y * w + x);
            o[0] = acc[0];
            o[1] = acc[1];
            o[2] = acc[2];
        }
    }
    /* Vertical pass back into the image. */
    for (int y = 0; y < h; y++) {
        uint32_t *row = (uint32_t *)(d + (size_t)y * stride);
        for (int x = 0; x < w; x++) {
            float acc[3] = {0, 0, 0};
            for (int k = -rad; k <= rad; k++) {
                int yy = y + k < 0 ? 0 : (y + k >= h ? h - 1 : y + k);
                const float *p = t + 3 * ((size_t)yy * w + x);
                float wk = kf[abs(k)];
                acc[0] += wk * p[0];
                acc[1] += wk * p[1];
                acc[2] += wk * p[2];
            }
            uint32_t c[3];
            for (int i = 0; i < 3; i++) {
                float v = acc[i] + 0.5f;
                c[i] = v <= 0 ? 0 : (v >= 255 ? 255 : (uint32_t)v);
            }
            row[x] = 0xff000000u | (c[0] << 16) | (c[1] << 8) | c[2];
        }
    }
    cairo_surface_mark_dirty(r->image);
}

static void render(struct renderer *r, struct rng *g, const char *label, size_t len,
                   const char *family)
{
    const double W = r->w, H = r->h;
    cairo_t *cr = cairo_create(r->image);

    /* Background: grey lightening from left to right (192 -> ~250 in the real set) with a
     * slight colour tint. */
    double tint[3];
    for (int i = 0; i < 3; i++)
        tint[i] = rng_range(g, -0.012, 0.012);
    double g0 = rng_range(g, 0.70, 0.80), g1 = rng_range(g, 0.93, 1.0);
    double tilt = H * rng_range(g, -0.5, 0.5);
    cairo_pattern_t *bg = cairo_pattern_create_linear(0, H / 2 - tilt, W, H / 2 + tilt);
    cairo_pattern_add_color_stop_rgb(bg, 0, g0 + tint[0], g0 + tint[1], g0 + tint[2]);
    cairo_pattern_add_color_stop_rgb(bg, 1, fmin(1, g1 + tint[0]), fmin(1, g1 + tint[1]),
                                     fmin(1, g1 + tint[2]));
    cairo_set_source(cr, bg);
    cairo_paint(cr);
    cairo_pattern_destroy(bg);

    /* Characters: dark grey through the speckled mask. */
    double ink = rng_range(g, 0.0, 0.16);
    draw_characters(r, g, label, len, family);
    speckle_edges(r, g);
    cairo_set_source_rgb(cr, ink, ink, ink);
    cairo_mask_surface(cr, r->mask, 0, 0);

    /* Noise lines: the thick strike-through, sometimes a thin second one. */
    cairo_set_source_rgb(cr, ink, ink, ink);
    draw_strike_line(cr, g, W, H);
    if (rng_unit(g) < 0.3) {
        double grey = rng_range(g, 0.0, 0.45);
        cairo_set_source_rgb(cr, grey, grey, grey);
        cairo_set_line_width(cr, H * rng_range(g, 0.015, 0.03));
        cairo_move_to(cr, W * rng_range(g, 0.0, 0.3), H * rng_range(g, 0.1, 0.9));
        cairo_curve_to(cr, W * rng_range(g, 0.3, 0.5), H * rng_range(g, 0.0, 1.0),
                       W * rng_range(g, 0.5, 0.7), H * rng_range(g, 0.0, 1.0),
                       W * rng_range(g, 0.7, 1.0), H * rng_range(g, 0.1, 0.9));
        cairo_stroke(cr);
    }

    /* Dots. */
    int n_dots = (int)rng_below(g, (uint64_t)(W * H / 1500) + 1);
    for (int i = 0; i < n_dots; i++) {
        double grey = rng_range(g, 0.0, 0.6);
        cairo_set_source_rgb(cr, grey, grey, grey);
        cairo_arc(cr, W * rng_unit(g), H * rng_unit(g), H * rng_range(g, 0.006, 0.018), 0,
                  2 * M_PI);
        cairo_fill(cr);
    }
    cairo_destroy(cr);

    blur_image(r, rng_range(g, 0.3, 0.6));
}

int main(int argc, char **argv)
{
    struct options o;
    parse_args(argc, argv, &o);

    mode_t um = umask(0);
    umask(um);
    if (make_dirs(o.out_dir) != 0) {
        fprintf(stderr, "%s: --out '%s': cannot create the directory: %s\n", prog, o.out_dir,
                strerror(errno));
        free(o.fonts);
        return EXIT_RUNTIME;
    }
    if (access(o.out_dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "%s: --out '%s': directory is not writable: %s\n", prog, o.out_dir,
                strerror(errno));
        free(o.fonts);
        return EXIT_RUNTIME;
    }

    /* Names are known before anything is drawn: refuse before writing the first file. */
    long n_existing;
    size_t first_size = strlen(o.out_dir) + NAME_SIZE + 2;
    char *first = malloc(first_size);
    if (first == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        free(o.fonts);
        return EXIT_RUNTIME;
    }
    int rc = count_existing(&o, &n_existing, first, first_size);
    if (rc == 0 && n_existing > 0 && !o.overwrite) {
        fprintf(stderr, "%s: %s already exists", prog, first);
        if (o.count > 1)
            fprintf(stderr, " (%ld of the %ld files this run would write %s in --out '%s')",
                    n_existing, o.count, n_existing == 1 ? "is" : "are", o.out_dir);
        fprintf(stderr,
                "; nothing was written. Use an empty or new folder, or --overwrite to "
                "replace %s.\n",
                n_existing == 1 ? "it" : "them");
        rc = EXIT_USAGE;
    }
    free(first);
    if (rc != 0) {
        free(o.fonts);
        return rc;
    }

    struct renderer r;
    struct label_table table = {0};
    if (renderer_init(&r, o.width, o.height) != 0 || table_init(&table, o.count) != 0) {
        fprintf(stderr, "%s: out of memory for %dx%d images\n", prog, o.width, o.height);
        table_free(&table);
        renderer_free(&r);
        free(o.fonts);
        return EXIT_RUNTIME;
    }
    for (long i = 0; i < o.count && rc == 0; i++) {
        struct rng g;
        struct image_plan p;
        if (plan_image(&o, i, &table, &g, &p) != 0) {
            fprintf(stderr, "%s: out of memory\n", prog);
            rc = EXIT_RUNTIME;
            break;
        }
        render(&r, &g, p.label, p.len, p.family);
        if (write_png(r.image, o.out_dir, p.name, 0666 & ~um, o.overwrite) != 0)
            rc = EXIT_RUNTIME;
    }
    if (rc == 0) {
        printf("%s: wrote %ld image%s of %dx%d to %s", prog, o.count, plural(o.count), o.width,
               o.height, o.out_dir);
        if (n_existing > 0)
            printf(" (%ld replaced file%s of the same name)", n_existing, plural(n_existing));
        printf("\n");
    }
    table_free(&table);
    renderer_free(&r);
    free(o.fonts);
    return rc;
}
