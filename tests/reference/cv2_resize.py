#!/usr/bin/python3
"""Reference resizes for tests/test_preprocess.c, computed with OpenCV.

Usage: cv2_resize.py JOBS_FILE

Each line of JOBS_FILE is tab-separated:
    image_path  x  y  width  height  out_width  out_height  out_path
It writes cv2.resize(cv2.imread(image_path)[y:y+height, x:x+width],
(out_width, out_height), interpolation=cv2.INTER_LINEAR) to out_path as raw
bytes, [out_height][out_width][3] BGR. x = -1 means the whole image.

Exit status 3 (with the reason on stderr) when cv2 cannot be imported, so the
test can skip; 1 on any other failure.
"""
import sys

try:
    import cv2
except Exception as e:  # noqa: BLE001 - any import failure means "no OpenCV here"
    print(f"cv2 cannot be imported: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    with open(sys.argv[1]) as jobs:
        for line in jobs:
            if not line.strip():
                continue
            path, x, y, w, h, ow, oh, out = line.rstrip("\n").split("\t")
            x, y, w, h, ow, oh = map(int, (x, y, w, h, ow, oh))
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                print(f"{path}: cv2.imread could not read it", file=sys.stderr)
                return 1
            if x >= 0:
                image = image[y:y + h, x:x + w]
            resized = cv2.resize(image, (ow, oh), interpolation=cv2.INTER_LINEAR)
            with open(out, "wb") as f:
                f.write(resized.tobytes())
    print(f"OpenCV {cv2.__version__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
