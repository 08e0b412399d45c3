#!/usr/bin/env python3
"""Checks the fused GSM's CUDA kernels (src/ops/gate_shift/cuda.cu) without a GPU.

The kernel source is compiled as C++ with -DGSM_HOST_EMULATION (every thread of every block
run in turn, lanes in order; a warp sum collects the lanes' values and hands the total to the
last lane, the emulated leader) and each kernel is compared with PyTorch
autograd on the official GSM composition (grouped Conv3d on (B, C, T, H, W), tanh gates,
shift of each half, residual, per-half re-interleave). This checks the kernels' indexing,
boundaries and maths; the warp shuffle itself and the launch run only on a GPU
(scripts/device-bench.sh). Optionally compiles the source with NVRTC too.

Needs g++ and a throwaway virtualenv with torch (never a project dependency):
  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.11.0
  /tmp/torchvenv/bin/python scripts/cuda_kernels_host_check.py
"""
import ctypes
import os
import pathlib
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = 256

HARNESS = r"""
#include <cmath>
struct uint3h { unsigned x, y, z; };
static uint3h blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
static float atomicAdd(float* p, float v) { float o = *p; *p += v; return o; }
%s
#define LAUNCH(gx, gy, call) \
  gridDim = {(unsigned)(gx), (unsigned)(gy), 1}; blockDim = {%d, 1, 1}; \
  for (unsigned by = 0; by < (unsigned)(gy); ++by) for (unsigned bx = 0; bx < (unsigned)(gx); ++bx) \
    for (unsigned tx = 0; tx < %d; ++tx) { blockIdx = {bx, by, 0}; threadIdx = {tx, 0, 0}; emu_call = 0; call; }
#define HOST_LAUNCHERS(D, S) \
void h_gate_conv_fwd_##S(int gx, const D* r, const D* w, const D* b, D* o, int B, int T, int C, int H, int W) \
{ LAUNCH(gx, 1, gate_conv_fwd_##S(r, w, b, o, B, T, C, H, W)); } \
void h_gate_conv_bwd_input_##S(int gx, const D* da, const D* w, D* dr, int B, int T, int C, int H, int W) \
{ LAUNCH(gx, 1, gate_conv_bwd_input_##S(da, w, dr, B, T, C, H, W)); } \
void h_gate_conv_bwd_weight_##S(int gx, int gy, const D* r, const D* da, float* dw, float* db, int B, int T, int C, int H, int W) \
{ LAUNCH(gx, gy, gate_conv_bwd_weight_##S(r, da, dw, db, B, T, C, H, W)); } \
void h_shift_fwd_##S(int gx, const D* x, const D* a, D* y, int B, int T, int C, int HW) \
{ LAUNCH(gx, 1, shift_fwd_##S(x, a, y, B, T, C, HW)); } \
void h_shift_bwd_input_##S(int gx, const D* a, const D* dy, D* dx, int B, int T, int C, int HW) \
{ LAUNCH(gx, 1, shift_bwd_input_##S(a, dy, dx, B, T, C, HW)); } \
void h_shift_bwd_gate_##S(int gx, const D* x, const D* a, const D* dy, D* da, int B, int T, int C, int HW) \
{ LAUNCH(gx, 1, shift_bwd_gate_##S(x, a, dy, da, B, T, C, HW)); } \
void h_affine_act_##S(int gx, const D* x, const D* s, const D* b, D* y, int B, int T, int C, int HW, float mx) \
{ LAUNCH(gx, 1, affine_act_##S(x, s, b, y, B, T, C, HW, mx)); } \
void h_shift_fwd_affine_##S(int gx, const D* x, const D* a, const D* s, const D* b, D* y, int B, int T, int C, \
                            int HW, float mx) \
{ LAUNCH(gx, 1, shift_fwd_affine_##S(x, a, s, b, y, B, T, C, HW, mx)); } \
void h_unit_gates_nhwc_##S(int gx, const D* x, const D* w, const D* b, const D* s, const D* sb, float* g, int B, \
                           int T, int C, int H, int W) \
{ LAUNCH(gx, 1, unit_gates_nhwc_##S(x, w, b, s, sb, g, B, T, C, H, W)); } \
void h_unit_shift_nhwc_##S(int gx, const D* x, const float* g, const D* ps, const D* pb, D* y, int B, int T, \
                           int C, int HW, float mx) \
{ LAUNCH(gx, 1, unit_shift_nhwc_##S(x, g, ps, pb, y, B, T, C, HW, mx)); }
extern "C" {
HOST_LAUNCHERS(float, f32)
HOST_LAUNCHERS(bf16, bf16)
}
"""


def kernel_source():
    return (ROOT / "src/ops/gate_shift/cuda.cu").read_text()


def build(tmp):
    src = pathlib.Path(tmp) / "gsm_host.cpp"
    src.write_text("#define GSM_HOST_EMULATION\n" + HARNESS % (kernel_source(), BLOCK, BLOCK))
    lib = pathlib.Path(tmp) / "gsm_host.so"
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def ptr(t):
    assert t.is_contiguous() and t.dtype in (torch.float32, torch.bfloat16)
    return ctypes.c_void_p(t.data_ptr())


def grid(n):
    return (n + BLOCK - 1) // BLOCK


def interleave(z):
    b, c, t, h, w = z.shape
    return z.reshape(b, 2, c // 2, t, h, w).transpose(1, 2).reshape(b, c, t, h, w)


def reference(x, weight, bias, segments, feature_map=None):
    """Official GSM after BN+ReLU: x is ReLU(BN(x)) for the gate, and the feature map itself
    unless `feature_map` is given."""
    bt, c, h, w = x.shape
    b = bt // segments
    r5 = x.reshape(b, segments, c, h, w).transpose(1, 2)
    a = F.conv3d(r5, weight, bias, padding=1, groups=2)  # (B, 2, T, H, W)
    x5 = r5 if feature_map is None else feature_map.reshape(b, segments, c, h, w).transpose(1, 2)
    g = torch.tanh(a)
    x1, x2 = x5[:, : c // 2], x5[:, c // 2 :]
    y1, y2 = x1 * g[:, :1], x2 * g[:, 1:]
    z1 = F.pad(y1[:, :, 1:], (0, 0, 0, 0, 0, 1)) + (x1 - y1)
    z2 = F.pad(y2[:, :, :-1], (0, 0, 0, 0, 1, 0)) + (x2 - y2)
    y = torch.cat([interleave(z1), interleave(z2)], 1)
    return a, y.transpose(1, 2).reshape(bt, c, h, w)


def rel(ours, ref):
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def check(lib, suffix, b, t, c, h, w, chunks):
    torch.manual_seed(b * 1000 + t * 100 + c + h + w)
    # For bfloat16 the inputs are bfloat16 values; the reference computes on them in float32.
    exact = (lambda v: v.bfloat16().float()) if suffix == "bf16" else (lambda v: v)
    x = exact(torch.randn(b * t, c, h, w)).requires_grad_()
    weight = exact(0.3 * torch.randn(2, c // 2, 3, 3, 3)).requires_grad_()
    bias = exact(torch.randn(2)).requires_grad_()
    a_ref, y_ref = reference(x, weight, bias, t)
    a_ref.retain_grad()
    dy = exact(torch.randn_like(y_ref))
    (y_ref * dy).sum().backward()
    # The reference's gradients split into the shift's (through a) and the conv's (into r = x).
    a_shift = a_ref.detach().clone().requires_grad_()
    x_shift = x.detach().clone().requires_grad_()
    bt = b * t
    x5 = x_shift.reshape(b, t, c, h, w).transpose(1, 2)
    g = torch.tanh(a_shift)
    x1, x2 = x5[:, : c // 2], x5[:, c // 2 :]
    y1, y2 = x1 * g[:, :1], x2 * g[:, 1:]
    z1 = F.pad(y1[:, :, 1:], (0, 0, 0, 0, 0, 1)) + (x1 - y1)
    z2 = F.pad(y2[:, :, :-1], (0, 0, 0, 0, 1, 0)) + (x2 - y2)
    y_s = torch.cat([interleave(z1), interleave(z2)], 1).transpose(1, 2).reshape(bt, c, h, w)
    (y_s * dy).sum().backward()
    dx_shift, da_shift = x_shift.grad, a_shift.grad

    dt = torch.bfloat16 if suffix == "bf16" else torch.float32
    k = {name: getattr(lib, f"h_{name}_{suffix}") for name in
         ["gate_conv_fwd", "gate_conv_bwd_input", "gate_conv_bwd_weight", "shift_fwd", "shift_bwd_input", "shift_bwd_gate",
          "affine_act", "shift_fwd_affine", "unit_gates_nhwc", "unit_shift_nhwc"]}
    xd, wd, bd = (v.detach().to(dt).contiguous() for v in (x, weight, bias))
    a = torch.empty(b, 2, t, h, w, dtype=dt)
    k["gate_conv_fwd"](grid(a.numel()), ptr(xd), ptr(wd), ptr(bd), ptr(a), b, t, c, h, w)
    y = torch.empty_like(xd)
    k["shift_fwd"](grid(y.numel()), ptr(xd), ptr(a), ptr(y), b, t, c, h * w)
    dyc = dy.to(dt).contiguous()
    dx = torch.empty_like(xd)
    k["shift_bwd_input"](grid(dx.numel()), ptr(a), ptr(dyc), ptr(dx), b, t, c, h * w)
    da = torch.empty_like(a)
    k["shift_bwd_gate"](grid(da.numel()), ptr(xd), ptr(a), ptr(dyc), ptr(da), b, t, c, h * w)
    dr = torch.empty_like(xd)
    k["gate_conv_bwd_input"](grid(dr.numel()), ptr(da), ptr(wd), ptr(dr), b, t, c, h, w)
    dw, db = torch.zeros(wd.shape), torch.zeros(2)
    k["gate_conv_bwd_weight"](c, chunks, ptr(xd), ptr(da), ptr(dw), ptr(db), b, t, c, h, w)
    # The inference unit's kernels: BN in affine form + ReLU (max ∞) or ReLU6 (max 6), alone
    # and after the shift, against the same maps in PyTorch.
    scale, shift = exact(torch.randn(c)), exact(torch.randn(c))
    sd, hd = scale.to(dt).contiguous(), shift.to(dt).contiguous()
    per_channel = lambda v, m: (v * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)).clamp(0, m)
    unit_errors = []
    for mx in (float("inf"), 6.0):
        r = torch.empty_like(xd)
        k["affine_act"](grid(r.numel()), ptr(xd), ptr(sd), ptr(hd), ptr(r), b, t, c, h * w, ctypes.c_float(mx))
        unit_errors.append(("affine_act", rel(r.float(), per_channel(x.detach(), mx))))
        ys = torch.empty_like(xd)
        k["shift_fwd_affine"](grid(ys.numel()), ptr(xd), ptr(a), ptr(sd), ptr(hd), ptr(ys), b, t, c, h * w,
                              ctypes.c_float(mx))
        unit_errors.append(("shift + affine", rel(ys.float(), per_channel(y.float(), mx))))
    # The whole unit on a channels-last map (two kernels): gates from ReLU(s·x + sb), then the
    # shift with the unit's BN + activation, against the official composition on the same map.
    gs, gb = exact(torch.randn(c)), exact(torch.randn(c))
    r_ref = (x.detach() * gs.view(1, c, 1, 1) + gb.view(1, c, 1, 1)).clamp(min=0)
    a_unit, y_unit = reference(r_ref, weight.detach(), bias.detach(), t, x.detach())
    nhwc = lambda v: v.permute(0, 2, 3, 1).contiguous()
    x_cl = nhwc(xd)
    gsd, gbd = gs.to(dt).contiguous(), gb.to(dt).contiguous()
    for mx in (float("inf"), 6.0):
        gates = torch.empty(b, 2, t, h, w)
        k["unit_gates_nhwc"](grid(gates.numel() // 2 * 32), ptr(x_cl), ptr(wd), ptr(bd), ptr(gsd), ptr(gbd),
                             ptr(gates), b, t, c, h, w)
        unit_errors.append(("unit gates (NHWC)", rel(gates, torch.tanh(a_unit))))
        yu = torch.empty_like(x_cl)
        k["unit_shift_nhwc"](grid(yu.numel()), ptr(x_cl), ptr(gates), ptr(sd), ptr(hd), ptr(yu), b, t, c, h * w,
                             ctypes.c_float(mx))
        unit_errors.append(("unit (NHWC)", rel(yu.float(), nhwc(per_channel(y_unit, mx)))))
    a, y, dx, da, dr = (v.float() for v in (a, y, dx, da, dr))

    errors = {
        "gate logits": rel(a, a_ref.detach()),
        "y": rel(y, y_ref.detach()),
        "dx (shift)": rel(dx, dx_shift),
        "d gate logits": rel(da, da_shift),
        "dx (total)": rel(dx + dr, x.grad),
        "d weight": rel(dw, weight.grad),
        "d bias": rel(db, bias.grad),
        "unit affine_act": max(e for n, e in unit_errors if n == "affine_act"),
        "unit shift + affine": max(e for n, e in unit_errors if n == "shift + affine"),
        "unit gates NHWC": max(e for n, e in unit_errors if n == "unit gates (NHWC)"),
        "unit NHWC": max(e for n, e in unit_errors if n == "unit (NHWC)"),
    }
    worst = max(errors.values())
    print(f"{suffix:>4} B={b} T={t} C={c} {h}x{w} chunks={chunks}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return worst


def main():
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(tmp)
        shapes = [(2, 8, 16, 5, 7, 1), (1, 3, 8, 4, 4, 2), (3, 1, 12, 2, 3, 1), (1, 16, 32, 7, 7, 3), (1, 4, 72, 3, 5, 2)]
        worst = {s: max(check(lib, s, *shape) for shape in shapes) for s in ("f32", "bf16")}
    # float32 against PyTorch's float32; bfloat16 (float arithmetic, outputs rounded to 8-bit
    # mantissas, the gate gradient rounded before the conv's backward) against float32 on the
    # same bfloat16 inputs.
    tolerance = {"f32": 1e-5, "bf16": 1e-2}
    for s, w in worst.items():
        print(f"{s}: worst relative error {w:.1e} (tolerance {tolerance[s]:.0e})")
    if any(worst[s] > tolerance[s] for s in worst):
        sys.exit("FAILED")
    nvrtc = os.environ.get("NVRTC_LIB")
    if nvrtc:
        lib = ctypes.CDLL(nvrtc)
        prog = ctypes.c_void_p()
        assert lib.nvrtcCreateProgram(ctypes.byref(prog), kernel_source().encode(), b"gsm.cu", 0, None, None) == 0
        opts = (ctypes.c_char_p * 1)(b"--gpu-architecture=compute_80")
        rc = lib.nvrtcCompileProgram(prog, 1, opts)
        print("NVRTC compile:", "ok" if rc == 0 else f"error {rc}")
        if rc != 0:
            sys.exit(1)


if __name__ == "__main__":
    main()
