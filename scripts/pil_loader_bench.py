#!/usr/bin/env python3
"""Reference timing of the official TSN/TSM/GSM PIL-based training and test pipelines.

Re-implements (does not import) what the official `TSNDataSet.__getitem__` does per clip:
segment sampling, `Image.open(...).convert('RGB')` per frame, GroupMultiScaleCrop
(scales 1/.875/.75/.66, max_distort 1, 13 fixed offsets) + resize to 224 (bilinear),
random horizontal flip, stack, to float and normalise — or, for the test pipeline,
GroupScale(256) + GroupCenterCrop(224). One process = one worker.

Usage: python3 pil_loader_bench.py LIST ROOT [--segments 8] [--limit N]
Needs pillow and numpy (install them in a throwaway virtualenv).
"""
import argparse
import os
import random
import time

import numpy as np
from PIL import Image


def sample_train(n, segments):
    avg = n // segments
    if avg > 0:
        return [i * avg + random.randint(0, avg - 1) for i in range(segments)]
    return [0] * segments


def sample_test(n, segments):
    tick = n / segments
    return [int(tick / 2.0 + tick * i) for i in range(segments)]


def fix_offsets(w, h, cw, ch):
    ws, hs = (w - cw) // 4, (h - ch) // 4
    return [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs), (0, 2 * hs), (4 * ws, 2 * hs),
            (2 * ws, 4 * hs), (2 * ws, 0), (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]


def multi_scale_crop(images, size=224):
    w, h = images[0].size
    base = min(w, h)
    sizes = [int(base * s) for s in (1, .875, .75, .66)]
    sizes = [size if abs(x - size) < 3 else x for x in sizes]
    pairs = [(cw, ch) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= 1]
    cw, ch = random.choice(pairs)
    x, y = random.choice(fix_offsets(w, h, cw, ch))
    return [im.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BILINEAR) for im in images]


def scale_centre(images, scale=256, size=224):
    out = []
    for im in images:
        w, h = im.size
        if w < h:
            im = im.resize((scale, int(scale * h / w)), Image.BILINEAR)
        else:
            im = im.resize((int(scale * w / h), scale), Image.BILINEAR)
        w, h = im.size
        x, y = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        out.append(im.crop((x, y, x + size, y + size)))
    return out


def to_tensor(images):
    arr = np.concatenate([np.asarray(im, dtype=np.uint8) for im in images], axis=2)  # H, W, 3T
    t = arr.transpose(2, 0, 1).astype(np.float32)
    mean = np.array([104, 117, 128] * len(images), dtype=np.float32).reshape(-1, 1, 1)
    return t - mean


def main():
    p = argparse.ArgumentParser()
    p.add_argument("list")
    p.add_argument("root")
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--template", default="img_{:05d}.jpg")
    a = p.parse_args()
    entries = [l.split() for l in open(a.list) if l.strip()]
    if a.limit:
        entries = entries[:a.limit]
    for name in ("train", "test"):
        random.seed(0)
        t = time.perf_counter()
        for path, n, _ in entries:
            n = int(n)
            idx = sample_train(n, a.segments) if name == "train" else sample_test(n, a.segments)
            imgs = [Image.open(os.path.join(a.root, path, a.template.format(i + 1))).convert("RGB") for i in idx]
            if name == "train":
                imgs = multi_scale_crop(imgs)
                if random.random() < 0.5:
                    imgs = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in imgs]
            else:
                imgs = scale_centre(imgs)
            to_tensor(imgs)
        s = time.perf_counter() - t
        print(f"{name:<5} PIL pipeline: {len(entries)} clips x {a.segments} frames at 224^2 in {s:.2f} s: "
              f"{len(entries) / s:.1f} clips/s (1 worker)")


if __name__ == "__main__":
    main()
