#!/usr/bin/env python3
"""Checks the fused GSM's CUDA kernels (src/model/temporal/gsm_cuda.rs) without a GPU.

The kernel source is compiled as C++ with -DGSM_HOST_EMULATION (every thread of every block
run in turn; warp sums become per-thread atomics) and each kernel is compared with PyTorch
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
    for (unsigned tx = 0; tx < %d; ++tx) { blockIdx = {bx, by, 0}; threadIdx = {tx, 0, 0}; call; }
extern "C" {
void h_gate_conv_fwd(int gx, const float* r, const float* w, const float* b, float* o, int B, int T, int C, int H, int W)
{ LAUNCH(gx, 1, gate_conv_fwd(r, w, b, o, B, T, C, H, W)); }
void h_gate_conv_bwd_input(int gx, const float* da, const float* w, float* dr, int B, int T, int C, int H, int W)
{ LAUNCH(gx, 1, gate_conv_bwd_input(da, w, dr, B, T, C, H, W)); }
void h_gate_conv_bwd_weight(int gx, int gy, const float* r, const float* da, float* dw, float* db, int B, int T, int C, int H, int W)
{ LAUNCH(gx, gy, gate_conv_bwd_weight(r, da, dw, db, B, T, C, H, W)); }
void h_shift_fwd(int gx, const float* x, const float* a, float* y, int B, int T, int C, int HW)
{ LAUNCH(gx, 1, shift_fwd(x, a, y, B, T, C, HW)); }
void h_shift_bwd_input(int gx, const float* a, const float* dy, float* dx, int B, int T, int C, int HW)
{ LAUNCH(gx, 1, shift_bwd_input(a, dy, dx, B, T, C, HW)); }
void h_shift_bwd_gate(int gx, const float* x, const float* a, const float* dy, float* da, int B, int T, int C, int HW)
{ LAUNCH(gx, 1, shift_bwd_gate(x, a, dy, da, B, T, C, HW)); }
}
"""


def kernel_source():
    text = (ROOT / "src/model/temporal/gsm_cuda.rs").read_text()
    return text[text.index('r#"') + 3 : text.index('"#;')]


def build(tmp):
    src = pathlib.Path(tmp) / "gsm_host.cpp"
    src.write_text("#define GSM_HOST_EMULATION\n" + HARNESS % (kernel_source(), BLOCK, BLOCK))
    lib = pathlib.Path(tmp) / "gsm_host.so"
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def ptr(t):
    assert t.is_contiguous() and t.dtype == torch.float32
    return ctypes.c_void_p(t.data_ptr())


def grid(n):
    return (n + BLOCK - 1) // BLOCK


def interleave(z):
    b, c, t, h, w = z.shape
    return z.reshape(b, 2, c // 2, t, h, w).transpose(1, 2).reshape(b, c, t, h, w)


def reference(x, weight, bias, segments):
    """Official GSM after BN+ReLU: x is ReLU(BN(x)) for the gate and the feature map itself."""
    bt, c, h, w = x.shape
    b = bt // segments
    x5 = x.reshape(b, segments, c, h, w).transpose(1, 2)
    a = F.conv3d(x5, weight, bias, padding=1, groups=2)  # (B, 2, T, H, W)
    g = torch.tanh(a)
    x1, x2 = x5[:, : c // 2], x5[:, c // 2 :]
    y1, y2 = x1 * g[:, :1], x2 * g[:, 1:]
    z1 = F.pad(y1[:, :, 1:], (0, 0, 0, 0, 0, 1)) + (x1 - y1)
    z2 = F.pad(y2[:, :, :-1], (0, 0, 0, 0, 1, 0)) + (x2 - y2)
    y = torch.cat([interleave(z1), interleave(z2)], 1)
    return a, y.transpose(1, 2).reshape(bt, c, h, w)


def rel(ours, ref):
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def check(lib, b, t, c, h, w, chunks):
    torch.manual_seed(b * 1000 + t * 100 + c + h + w)
    x = torch.randn(b * t, c, h, w, requires_grad=True)
    weight = (0.3 * torch.randn(2, c // 2, 3, 3, 3)).requires_grad_()
    bias = torch.randn(2, requires_grad=True)
    a_ref, y_ref = reference(x, weight, bias, t)
    a_ref.retain_grad()
    dy = torch.randn_like(y_ref)
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

    xd, wd, bd = x.detach().contiguous(), weight.detach().contiguous(), bias.detach().contiguous()
    a = torch.empty(b, 2, t, h, w)
    lib.h_gate_conv_fwd(grid(a.numel()), ptr(xd), ptr(wd), ptr(bd), ptr(a), b, t, c, h, w)
    y = torch.empty_like(xd)
    lib.h_shift_fwd(grid(y.numel()), ptr(xd), ptr(a), ptr(y), b, t, c, h * w)
    dyc = dy.contiguous()
    dx = torch.empty_like(xd)
    lib.h_shift_bwd_input(grid(dx.numel()), ptr(a), ptr(dyc), ptr(dx), b, t, c, h * w)
    da = torch.empty_like(a)
    lib.h_shift_bwd_gate(grid(da.numel()), ptr(xd), ptr(a), ptr(dyc), ptr(da), b, t, c, h * w)
    dr = torch.empty_like(xd)
    lib.h_gate_conv_bwd_input(grid(dr.numel()), ptr(da), ptr(wd), ptr(dr), b, t, c, h, w)
    dw, db = torch.zeros_like(wd), torch.zeros(2)
    lib.h_gate_conv_bwd_weight(c, chunks, ptr(xd), ptr(da), ptr(dw), ptr(db), b, t, c, h, w)

    errors = {
        "gate logits": rel(a, a_ref.detach()),
        "y": rel(y, y_ref.detach()),
        "dx (shift)": rel(dx, dx_shift),
        "d gate logits": rel(da, da_shift),
        "dx (total)": rel(dx + dr, x.grad),
        "d weight": rel(dw, weight.grad),
        "d bias": rel(db, bias.grad),
    }
    worst = max(errors.values())
    print(f"B={b} T={t} C={c} {h}x{w} chunks={chunks}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return worst


def main():
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(tmp)
        worst = max(
            check(lib, *shape)
            for shape in [(2, 8, 16, 5, 7, 1), (1, 3, 8, 4, 4, 2), (3, 1, 12, 2, 3, 1), (1, 16, 32, 7, 7, 3)]
        )
    print(f"worst relative error {worst:.1e}")
    if worst > 1e-5:
        sys.exit("FAILED: above 1e-5")
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
