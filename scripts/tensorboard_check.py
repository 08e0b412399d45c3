"""Reads a gateshift run folder's TensorBoard event file with TensorBoard's own reader
(EventAccumulator, which checks every record's masked CRC-32C) and checks that its scalars and
steps equal metrics.jsonl's: train/* per iteration at the global step, epoch/* per epoch.

Usage: python tensorboard_check.py RUN_DIR   (exit 1 and the first difference when they differ)
"""
import json
import math
import sys

import tensorboard
from tensorboard.backend.event_processing import event_accumulator

STEP_TAGS = {"loss": "train/loss", "lr": "train/lr", "clips_per_s": "train/clips_per_s", "data_wait": "train/data_wait"}
EPOCH_KEYS = ["loss", "lr", "train_top1", "train_top5", "clips_per_s", "seconds", "val_top1", "val_top5",
              "val_mean_class", "val_noun_top1", "val_action_top1"]


def expected(run):
    want = {}
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if r["kind"] == "step":
                for key, tag in STEP_TAGS.items():
                    want.setdefault(tag, []).append((r["step"], r[key]))
            else:
                for key in EPOCH_KEYS:
                    if r.get(key) is not None:
                        want.setdefault(f"epoch/{key}", []).append((r["epoch"], r[key]))
    return want


def main(run):
    acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    want = expected(run)
    if sorted(got) != sorted(want):
        sys.exit(f"tags differ: event file {sorted(got)}, metrics.jsonl {sorted(want)}")
    n = 0
    for tag, rows in want.items():
        if [s for s, _ in got[tag]] != [s for s, _ in rows]:
            sys.exit(f"{tag}: steps differ: event file {[s for s, _ in got[tag]]}, metrics.jsonl {[s for s, _ in rows]}")
        for (step, g), (_, w) in zip(got[tag], rows):
            # The event file holds float32 (simple_value); metrics.jsonl the float64 it came from.
            if not math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-30):
                sys.exit(f"{tag} step {step}: event file {g}, metrics.jsonl {w}")
            n += 1
    print(f"TensorBoard {tensorboard.__version__}'s reader: {len(want)} tags, {n} scalars equal to metrics.jsonl")


if __name__ == "__main__":
    main(sys.argv[1])
