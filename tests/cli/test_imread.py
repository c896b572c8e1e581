#!/usr/bin/python3
"""The tools' pixels against cv2.imread(IMREAD_COLOR), the reference pipeline's reader.

    test_imread.py IMAGE_DUMP

JPEGs of a synthetic image (gradients, sharp edges, noise; odd sizes so the last chroma
column and row are partial) are written in the encodings users feed: OpenCV's (4:2:0,
progressive, restart intervals, grey) and Pillow's (4:4:4, 4:2:2, 4:2:0, grey, CMYK).
Each must decode to exactly imread's pixels (max difference 0). So must a JPEG and a PNG
with each EXIF orientation (1 to 8), which imread turns upright. A file cut short must be
refused as truncated, where imread fills it in. Needs /usr/bin/python3 with cv2, numpy
and PIL (python3-opencv, python3-numpy, python3-pil); exit 77 without them.
"""
import io
import os
import subprocess
import sys
import tempfile

try:
    import cv2
    import numpy as np
    from PIL import Image
except ImportError as e:
    print(f"skipped: needs python3-opencv, python3-numpy and python3-pil ({e})")
    sys.exit(77)

dump = sys.argv[1]
failures = []


def ours(path):
    out = path + ".rgb"
    run = subprocess.run([dump, path, out], capture_output=True, text=True)
    if run.returncode != 0:
        return None, run.stderr.strip()
    with open(out, "rb") as f:
        width, height = map(int, f.readline().split())
        rgb = np.frombuffer(f.read(), np.uint8).reshape(height, width, 3)
    return rgb, ""


def scene(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.float64)
    img[..., 0] = 255 * x / max(width - 1, 1)
    img[..., 1] = 255 * y / max(height - 1, 1)
    img[..., 2] = 128 + 100 * np.sin(x / 3.0 + y / 5.0)
    img[(x // 7 + y // 5) % 2 == 0] = [250, 20, 30]  # hard colour edges, chroma at every column
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)  # RGB


with tempfile.TemporaryDirectory() as tmp:
    cases = []
    for width, height in [(97, 41), (200, 50), (3, 3), (16, 8)]:
        rgb = scene(width, height, width)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        base = os.path.join(tmp, f"{width}x{height}")
        cv_cases = {
            "cv2-420": [cv2.IMWRITE_JPEG_QUALITY, 90],
            "cv2-progressive": [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
            "cv2-restart": [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
        }
        for name, params in cv_cases.items():
            cv2.imwrite(f"{base}-{name}.jpg", bgr, params)
            cases.append(f"{base}-{name}.jpg")
        cv2.imwrite(f"{base}-cv2-grey.jpg", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        cases.append(f"{base}-cv2-grey.jpg")
        pil = Image.fromarray(rgb)
        for name, subsampling in [("444", 0), ("422", 1), ("420", 2)]:
            pil.save(f"{base}-pil-{name}.jpg", quality=90, subsampling=subsampling)
            cases.append(f"{base}-pil-{name}.jpg")
        pil.convert("L").save(f"{base}-pil-grey.jpg", quality=90)
        pil.convert("CMYK").save(f"{base}-pil-cmyk.jpg", quality=90)
        cases += [f"{base}-pil-grey.jpg", f"{base}-pil-cmyk.jpg"]
        # a .png name over JPEG content: decoded by content
        os.rename(f"{base}-pil-444.jpg", f"{base}-pil-444.png")
        cases[cases.index(f"{base}-pil-444.jpg")] = f"{base}-pil-444.png"

    # EXIF orientation, in a JPEG's APP1 segment and a PNG's eXIf chunk
    rgb = scene(13, 6, 1)
    pil = Image.fromarray(rgb)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        base = os.path.join(tmp, f"orientation{orientation}")
        pil.save(base + ".jpg", quality=90, subsampling=0, exif=exif.tobytes())
        pil.save(base + ".png", exif=exif.tobytes())
        cases += [base + ".jpg", base + ".png"]

    # imread takes a JPEG's EXIF from its first APP1 segment before the scan, wherever it
    # is among the markers: after a COM or the DQT (where libexif's own search gave up, and
    # the orientation was lost), and not from an APP1 after an XMP one (libexif went on to it)
    imread_height = {}  # upright height imread gives these 13x6 files, to check the premise

    def segment(marker, payload):
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    exif = Image.Exif()
    exif[0x0112] = 6
    app1 = segment(0xE1, exif.tobytes())  # "Exif\0\0" and the TIFF data
    xmp = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>")
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=90, subsampling=0)
    plain = buffer.getvalue()
    dqt = plain.index(b"\xff\xdb")
    dqt_end = dqt + 2 + int.from_bytes(plain[dqt + 2 : dqt + 4], "big")
    for name, data, height in [
        ("com-then-exif", plain[:2] + segment(0xFE, b"a comment") + app1 + plain[2:], 13),
        ("dqt-then-exif", plain[:dqt_end] + app1 + plain[dqt_end:], 13),
        ("xmp-then-exif", plain[:2] + xmp + app1 + plain[2:], 6),
    ]:
        path = os.path.join(tmp, f"orientation6-{name}.jpg")
        open(path, "wb").write(data)
        cases.append(path)
        imread_height[path] = height

    # a progressive JPEG's last scan repeated (libjpeg warns, imread decodes it): 30 more
    # scans are read as imread reads them, 150 more refused (each goes over the whole image: at 8192x8192,
    # 1000 of them took 43 s in a 360 KB file)
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=90, progressive=True)
    whole = buffer.getvalue()
    last_scan, end = whole.rindex(b"\xff\xda"), whole.rindex(b"\xff\xd9")
    many_scans = {}
    for repeats in [30, 150]:
        path = os.path.join(tmp, f"scans-repeated-{repeats}.jpg")
        data = whole[:end] + whole[last_scan:end] * repeats + whole[end:]
        open(path, "wb").write(data)
        many_scans[repeats] = path
    cases.append(many_scans[30])

    for path in cases:
        reference = cv2.imread(path, cv2.IMREAD_COLOR)
        got, error = ours(path)
        name = os.path.basename(path)
        if reference is None:
            failures.append(f"{name}: cv2.imread could not read it")
        elif got is None:
            failures.append(f"{name}: refused: {error}")
        elif path in imread_height and reference.shape[0] != imread_height[path]:
            failures.append(f"{name}: imread's height is {reference.shape[0]}, "
                            f"expected {imread_height[path]}")
        elif got.shape != reference.shape:
            failures.append(f"{name}: shape {got.shape}, imread {reference.shape}")
        else:
            diff = int(np.abs(got.astype(int) - reference[..., ::-1].astype(int)).max())
            print(f"{name}: max difference from imread {diff}")
            if diff != 0:
                failures.append(f"{name}: max difference from imread {diff}, expected 0")

    got, error = ours(many_scans[150])
    if got is not None or "cannot decode: more than 100 scans" not in error:
        failures.append(f"150 scans repeated: expected 'PATH: cannot decode: more than 100 scans', "
                        f"got {'pixels' if got is not None else error!r}")
    else:
        print(f"150 scans repeated: {error}")

    # cut short: imread fills the rest in (libjpeg warns); the tools refuse it
    whole = open(cases[0], "rb").read()
    for keep in [len(whole) - 2, len(whole) // 2]:
        cut = os.path.join(tmp, f"cut{keep}.jpg")
        open(cut, "wb").write(whole[:keep])
        got, error = ours(cut)
        if got is not None or "cannot decode: truncated" not in error or cut not in error:
            failures.append(f"{keep} of {len(whole)} bytes: expected 'PATH: cannot decode: "
                            f"truncated', got {'pixels' if got is not None else error!r}")
        else:
            print(f"{keep} of {len(whole)} bytes: {error}")

for f in failures:
    print("FAIL", f)
print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
