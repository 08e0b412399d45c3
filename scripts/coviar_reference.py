"""Reference fixture for CoViAR's accumulated motion vectors (`tests/fixtures/coviar_*`).

Re-encodes a real clip as CoViAR's `data/reencode.sh` does (MPEG-4 part 2, `-q:v 1`,
raw elementary stream; scaled to 160×128 rather than 340×256 to keep the fixture small),
decodes it with PyAV (libav, `flags2 +export_mvs`) and runs the accumulation of CoViAR's
`data_loader/coviar_data_loader.c` (`load(…, representation=MV, accumulate=True)`) step for
step: the `accu_src` arrays in the C code's x-major layout, a GOP counted at each I-frame,
the trace reset at its first frame, the output `x − accu_src` for the target position.

Throwaway virtualenv:  python3 -m venv /tmp/avenv && /tmp/avenv/bin/pip install av numpy safetensors
Run from the repository root:  /tmp/avenv/bin/python scripts/coviar_reference.py ../shared/assets/clips/v_SoccerJuggling_g23_c01.avi
"""

import subprocess
import sys

import av
import numpy as np
from safetensors.numpy import save_file

VIDEO = "tests/fixtures/coviar_soccer.m4v"
OUT = "tests/fixtures/coviar_accumulated_mv.safetensors"
# (gop_target, pos_target) as CoViAR's get_gop_pos gives them: GOP 12, positions 1…11.
TARGETS = [(0, 5), (1, 11), (2, 7)]


def reencode(src):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", src, "-frames:v", "37",
         "-vf", "scale=160:128,setsar=1:1", "-q:v", "1", "-c:v", "mpeg4", "-f", "rawvideo", VIDEO],
        check=True,
    )


def frames_with_vectors(path):
    """(pict_type, vectors or None, w, h) of every decoded frame, in order."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for frame in c.decode(stream):
            sd = frame.side_data.get("MOTION_VECTORS")
            mvs = sd.to_ndarray() if sd is not None else None
            kind = {1: "I", 2: "P", 3: "B"}.get(int(frame.pict_type), "?")  # AVPictureType
            yield kind, mvs, frame.width, frame.height


def coviar_load_mv(path, gop_target, pos_target):
    """coviar_data_loader.c's MV path with accumulate = 1, as a numpy (h, w, 2) int32 array."""
    cur_gop, cur_pos = -1, 0
    accu_src = accu_src_old = mv_arr = None
    for pict, mvs, w, h in frames_with_vectors(path):
        if pict == "I":
            cur_gop += 1
        if cur_gop != gop_target or cur_pos > pos_target:
            continue
        if mv_arr is None:
            mv_arr = np.zeros((h, w, 2), np.int32)
            accu_src_old = np.zeros(w * h * 2, np.int64)
            for x in range(w):
                for y in range(h):
                    accu_src_old[x * h * 2 + y * 2] = x
                    accu_src_old[x * h * 2 + y * 2 + 1] = y
            accu_src = accu_src_old.copy()
        if mvs is not None:
            for mv in mvs:
                assert mv["source"] == -1
                if mv["dst_x"] - mv["src_x"] == 0 and mv["dst_y"] - mv["src_y"] == 0:
                    continue
                for xs in range(-(int(mv["w"]) // 2), int(mv["w"]) // 2):
                    for ys in range(-(int(mv["h"]) // 2), int(mv["h"]) // 2):
                        pdx, pdy = int(mv["dst_x"]) + xs, int(mv["dst_y"]) + ys
                        psx, psy = int(mv["src_x"]) + xs, int(mv["src_y"]) + ys
                        if 0 <= pdy < h and 0 <= pdx < w and 0 <= psy < h and 0 <= psx < w:
                            for ch in range(2):
                                accu_src[pdx * h * 2 + pdy * 2 + ch] = accu_src_old[psx * h * 2 + psy * 2 + ch]
            accu_src_old = accu_src.copy()
            if cur_pos > 0 and cur_pos == pos_target:
                for x in range(w):
                    for y in range(h):
                        mv_arr[y, x, 0] = x - accu_src[x * h * 2 + y * 2]
                        mv_arr[y, x, 1] = y - accu_src[x * h * 2 + y * 2 + 1]
        cur_pos += 1
    return mv_arr


def main():
    reencode(sys.argv[1])
    types = "".join(p for p, _, _, _ in frames_with_vectors(VIDEO))
    print("picture types", types)
    tensors = {}
    for g, p in TARGETS:
        mv = coviar_load_mv(VIDEO, g, p)
        print(f"GOP {g} position {p}: frame {12 * g + p}, |mv| mean {np.abs(mv).mean():.2f}, max {np.abs(mv).max()}")
        tensors[f"frame{12 * g + p}"] = mv.astype(np.float16)
    save_file(tensors, OUT, metadata={"video": VIDEO, "types": types, "source": sys.argv[1].split("/")[-1]})


if __name__ == "__main__":
    main()
