#!/usr/bin/env python3
"""Reference optical flow from OpenCV's TV-L1 (`cv2.optflow.DualTVL1OpticalFlow`, the
algorithm and defaults denseflow used for TSN and TSM), for tests/flow.rs. Run in a
throwaway virtualenv, never as a project dependency:

    python3 -m venv /tmp/cvenv && /tmp/cvenv/bin/pip install opencv-contrib-python-headless numpy safetensors
    /tmp/cvenv/bin/python scripts/flow_reference.py [--farneback] OUT.safetensors CLIP:FRAME:HEIGHT [CLIP:FRAME:HEIGHT …]

`--farneback`: `cv2.calcOpticalFlowFarneback(i0, i1, None, 0.5, 3, 15, 3, 5, 1.2, 0)` (the
parameters of OpenCV's tutorials) instead of TV-L1.

For each CLIP (a video file), frames FRAME and FRAME+1 are decoded, scaled to HEIGHT rows
(INTER_AREA, width keeping the aspect ratio), made grey (cvtColor BGR2GRAY) and passed to
TV-L1 with OpenCV's defaults. The file holds, per pair k: `k.i0`, `k.i1` (the grey levels, H×W float32, the
exact grey input) and `k.flow` (float32 H×W×2, x then y); metadata `pairs` (JSON: clip,
frame, size, OpenCV's version and seconds per pair).
"""
import json
import os
import sys
import time

import cv2
import numpy as np
from safetensors.numpy import save_file


def grey_pair(clip, frame, height):
    cap = cv2.VideoCapture(clip)
    cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
    frames = []
    for _ in range(2):
        ok, img = cap.read()
        if not ok:
            sys.exit(f"{clip}: cannot read frame {frame}")
        h, w = img.shape[:2]
        width = round(w * height / h)
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    return frames


def main():
    farneback = sys.argv[1] == "--farneback"
    args = sys.argv[2:] if farneback else sys.argv[1:]
    out, specs = args[0], args[1:]
    tensors, pairs = {}, []
    for k, spec in enumerate(specs):
        clip, frame, height = spec.rsplit(":", 2)
        i0, i1 = grey_pair(clip, int(frame), int(height))
        start = time.perf_counter()
        if farneback:
            flow = cv2.calcOpticalFlowFarneback(i0, i1, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        else:
            flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(i0, i1, None)
        seconds = time.perf_counter() - start
        tensors[f"{k}.i0"], tensors[f"{k}.i1"] = i0.astype(np.float32), i1.astype(np.float32)
        tensors[f"{k}.flow"] = flow.astype(np.float32)
        pairs.append({"clip": os.path.basename(clip), "frame": int(frame), "size": list(i0.shape),
                      "opencv": cv2.__version__, "seconds": seconds, "threads": cv2.getNumThreads()})
        print(f"{clip} frame {frame}: {i0.shape}, |flow| max {np.abs(flow).max():.2f}, {seconds:.2f} s")
    save_file(tensors, out, metadata={"pairs": json.dumps(pairs)})


if __name__ == "__main__":
    main()
