//! CUDA kernels of the fused GSM for libtorch's GPU tensors (`--features tch`, backend
//! `tch-cuda`), float32 and bfloat16 (computed in float32): the same computations as
//! `gsm_kernels.rs`, one thread per output value,
//! compiled at run time with NVRTC and launched through the CUDA driver (both loaded
//! dynamically by `cudarc`, as burn's CubeCL runtimes do). Tensors stay libtorch's; kernels
//! run on the device's legacy default stream, the one libtorch uses unless told otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::kernels::Dims;

/// The kernel source. Layouts: feature maps (B·T, C, H, W) (the `unit_*_nhwc` kernels:
/// channels-last, B·T, H, W, C in memory), gates (B, 2, T, H, W), gate weight (2, C/2, 3, 3, 3);
/// shift +1 (from t+1) for half 1, −1 for half 2; per-half interleave.
pub const SOURCE: &str = r#"
typedef long long i64;
typedef unsigned short bf16;
// GSM_HOST_EMULATION: scripts/cuda_kernels_host_check.py compiles this file as C++ and runs
// every thread in turn, lanes of a warp in order (resetting `emu_call` for each thread). A warp
// sum records each lane's value; the last lane, which runs after the others, is the leader and
// gets the sum. Every lane of a warp reaches the same warp sums in the same order, as
// `__shfl_down_sync` with a full mask requires on the GPU.
#ifdef GSM_HOST_EMULATION
#include <cstring>
inline float bits_to_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned float_to_bits(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static float emu_lanes[64][32];
static int emu_call;
__device__ __forceinline__ float warp_sum(float v) {
    int lane = threadIdx.x & 31, k = emu_call++;
    emu_lanes[k][lane] = v;
    if (lane != 31) return v;
    float s = 0.0f;
    for (int l = 0; l < 32; ++l) s += emu_lanes[k][l];
    return s;
}
__device__ __forceinline__ bool warp_leader() { return (threadIdx.x & 31) == 31; }
#else
__device__ __forceinline__ float bits_to_float(unsigned u) { return __uint_as_float(u); }
__device__ __forceinline__ unsigned float_to_bits(float f) { return __float_as_uint(f); }
__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    return v;
}
__device__ __forceinline__ bool warp_leader() { return (threadIdx.x & 31) == 0; }
#endif
// Loads and stores: float32 as is; bfloat16 widened to float, computed in float, rounded to
// nearest even on store.
__device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, i64 i) { return bits_to_float((unsigned)p[i] << 16); }
__device__ __forceinline__ void st(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, i64 i, float v) {
    unsigned u = float_to_bits(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) { p[i] = (bf16)((u >> 16) | 0x40u); return; }
    p[i] = (bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ int interleaved(int c, int C) {
    int half = C / 2, quarter = C / 4, k = c / half, j = c % half;
    return k * half + (j % quarter) * 2 + j / quarter;
}

template <typename D>
__device__ void gate_conv_fwd(const D* r, const D* w, const D* bias, D* out, int B, int T, int C, int H, int W) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * 2 * T * H * W) return;
    int x = i % W; i64 q = i / W; int y = q % H; q /= H; int t = q % T; q /= T; int k = q % 2; int b = q / 2;
    int half = C / 2; i64 hw = (i64)H * W;
    float acc = ld(bias, k);
    for (int j = 0; j < half; ++j) {
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            i64 plane = (((i64)b * T + u) * C + k * half + j) * hw;
            i64 kw = ((i64)(k * half + j) * 3 + dt) * 9;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = y + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = x + dx - 1;
                    if (sx >= 0 && sx < W) acc += ld(w, kw + dy * 3 + dx) * ld(r, plane + (i64)sy * W + sx);
                }
            }
        }
    }
    st(out, i, acc);
}

template <typename D>
__device__ void gate_conv_bwd_input(const D* da, const D* w, D* dr, int B, int T, int C, int H, int W) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * H * W) return;
    int x = i % W; i64 q = i / W; int y = q % H; q /= H; int c = q % C; q /= C; int u = q % T; int b = q / T;
    int half = C / 2, k = c / half, j = c % half; i64 hw = (i64)H * W;
    float acc = 0.0f;
    for (int dt = 0; dt < 3; ++dt) {
        int t = u + 1 - dt;
        if (t < 0 || t >= T) continue;
        i64 plane = (((i64)b * 2 + k) * T + t) * hw;
        i64 kw = ((i64)(k * half + j) * 3 + dt) * 9;
        for (int dy = 0; dy < 3; ++dy) {
            int oy = y + 1 - dy;
            if (oy < 0 || oy >= H) continue;
            for (int dx = 0; dx < 3; ++dx) {
                int ox = x + 1 - dx;
                if (ox >= 0 && ox < W) acc += ld(w, kw + dy * 3 + dx) * ld(da, plane + (i64)oy * W + ox);
            }
        }
    }
    st(dr, i, acc);
}

// Grid (C, chunks): block (k·C/2 + j, chunk) sums its share of positions into 27 weight
// gradients (and, for j = 0, the bias gradient); warps reduce, then add atomically into the
// zero-initialised float32 dw / db.
template <typename D>
__device__ void gate_conv_bwd_weight(const D* r, const D* da, float* dw, float* db, int B, int T, int C, int H, int W) {
    int kj = blockIdx.x, half = C / 2, k = kj / half, j = kj % half;
    i64 hw = (i64)H * W, n = (i64)B * T * hw;
    float acc[28];
    for (int q = 0; q < 28; ++q) acc[q] = 0.0f;
    for (i64 p = (i64)blockIdx.y * blockDim.x + threadIdx.x; p < n; p += (i64)gridDim.y * blockDim.x) {
        int x = p % W; i64 q = p / W; int y = q % H; q /= H; int t = q % T; int b = q / T;
        float g = ld(da, (((i64)b * 2 + k) * T + t) * hw + (i64)y * W + x);
        acc[27] += g;
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            i64 plane = (((i64)b * T + u) * C + k * half + j) * hw;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = y + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = x + dx - 1;
                    if (sx >= 0 && sx < W) acc[dt * 9 + dy * 3 + dx] += g * ld(r, plane + (i64)sy * W + sx);
                }
            }
        }
    }
    for (int q = 0; q < 28; ++q) {
        float v = warp_sum(acc[q]);
        if (warp_leader()) {
            if (q < 27) atomicAdd(dw + (i64)kj * 27 + q, v);
            else if (j == 0) atomicAdd(db + k, v);
        }
    }
}

// The unit's BN in affine form and its activation, per channel: min(max(s·v + b, 0), mx).
template <typename D>
__device__ __forceinline__ float affine(const D* s, const D* b, int c, float v, float mx) {
    return fminf(fmaxf(v * ld(s, c) + ld(b, c), 0.0f), mx);
}

template <typename D>
__device__ void affine_act(const D* x, const D* s, const D* b, D* y, int B, int T, int C, int HW, float mx) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    st(y, i, affine(s, b, (int)((i / HW) % C), ld(x, i), mx));
}

// `ps` null: the plain shift; else the unit's BN + activation on each output channel.
template <typename D>
__device__ void shift_fwd(const D* x, const D* a, const D* ps, const D* pb, D* y, int B, int T, int C, int HW,
                          float mx) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    int p = i % HW; i64 q = i / HW; int c = q % C; q /= C; int t = q % T; int b = q / T;
    int k = c / (C / 2);
    float g = tanhf(ld(a, (((i64)b * 2 + k) * T + t) * HW + p));
    float xs = ld(x, i);
    float v = xs - g * xs;
    int tn = k == 0 ? t + 1 : t - 1;
    if (tn >= 0 && tn < T) {
        float gn = tanhf(ld(a, (((i64)b * 2 + k) * T + tn) * HW + p));
        v = gn * ld(x, (((i64)b * T + tn) * C + c) * HW + p) + v;
    }
    int oc = interleaved(c, C);
    if (ps) v = affine(ps, pb, oc, v, mx);
    st(y, (((i64)b * T + t) * C + oc) * HW + p, v);
}

// The GSM unit in inference on a channels-last map `x` (memory order B·T, H, W, C), in two
// passes. First the gates: tanh of the gate convolution on ReLU(s·x + sb) (GSM's BN3d in
// affine form and its ReLU, applied as `x` is read), float32 (B, 2, T, H, W). One warp per
// position: its lanes read 32 neighbouring channels at once (one coalesced load per tap),
// each keeps the sum of its channels of either half, and the warp adds them up.
template <typename D>
__device__ void unit_gates_nhwc(const D* x, const D* w, const D* bias, const D* s, const D* sb, float* g,
                                int B, int T, int C, int H, int W) {
    i64 pos = ((i64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    i64 hw = (i64)H * W;
    if (pos >= (i64)B * T * hw) return;
    int px = pos % W; i64 q = pos / W; int py = q % H; q /= H; int t = q % T; int b = q / T;
    int half = C / 2;
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float sc = ld(s, c), sh = ld(sb, c), acc = 0.0f;
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = py + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = px + dx - 1;
                    if (sx < 0 || sx >= W) continue;
                    float r = fmaxf(ld(x, ((((i64)b * T + u) * H + sy) * W + sx) * C + c) * sc + sh, 0.0f);
                    acc += ld(w, (i64)c * 27 + dt * 9 + dy * 3 + dx) * r;
                }
            }
        }
        if (c < half) acc0 += acc; else acc1 += acc;
    }
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
    if (warp_leader()) {
        i64 p = (i64)py * W + px;
        g[(((i64)b * 2) * T + t) * hw + p] = tanhf(acc0 + ld(bias, 0));
        g[(((i64)b * 2 + 1) * T + t) * hw + p] = tanhf(acc1 + ld(bias, 1));
    }
}

// Then the shift by the gates `g`, the residual and the re-interleave, with the unit's BN (in
// affine form) and activation on each output channel, channels-last in and out. One thread
// per output value, channels fastest (coalesced stores); output channel `oc` of half k comes
// from input channel k·C/2 + (m mod 2)·C/4 + m/2, m = oc − k·C/2 (`interleaved` inverted).
template <typename D>
__device__ void unit_shift_nhwc(const D* x, const float* g, const D* ps, const D* pb, D* y, int B, int T, int C,
                                int HW, float mx) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * HW * C) return;
    int oc = i % C; i64 q = i / C; int p = q % HW; q /= HW; int t = q % T; int b = q / T;
    int half = C / 2, quarter = C / 4, k = oc / half, m = oc % half;
    int c = k * half + (m % 2) * quarter + m / 2;
    float gt = g[(((i64)b * 2 + k) * T + t) * HW + p];
    float xs = ld(x, i - oc + c);
    float v = xs - gt * xs;
    int tn = k == 0 ? t + 1 : t - 1;
    if (tn >= 0 && tn < T) {
        float gn = g[(((i64)b * 2 + k) * T + tn) * HW + p];
        v = gn * ld(x, (((i64)b * T + tn) * HW + p) * C + c) + v;
    }
    st(y, i, affine(ps, pb, oc, v, mx));
}

template <typename D>
__device__ void shift_bwd_input(const D* a, const D* dy, D* dx, int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    int p = i % HW; i64 q = i / HW; int c = q % C; q /= C; int t = q % T; int b = q / T;
    int k = c / (C / 2), oc = interleaved(c, C);
    float g = tanhf(ld(a, (((i64)b * 2 + k) * T + t) * HW + p));
    float dz = ld(dy, (((i64)b * T + t) * C + oc) * HW + p);
    float v = dz - g * dz;
    int tp = k == 0 ? t - 1 : t + 1;
    if (tp >= 0 && tp < T) v = v + g * ld(dy, (((i64)b * T + tp) * C + oc) * HW + p);
    st(dx, i, v);
}

template <typename D>
__device__ void shift_bwd_gate(const D* x, const D* a, const D* dy, D* da, int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * 2 * T * HW) return;
    int p = i % HW; i64 q = i / HW; int t = q % T; q /= T; int k = q % 2; int b = q / 2;
    int half = C / 2, tp = k == 0 ? t - 1 : t + 1;
    bool inside = tp >= 0 && tp < T;
    float acc = 0.0f;
    for (int j = 0; j < half; ++j) {
        int c = k * half + j, oc = interleaved(c, C);
        float xs = ld(x, (((i64)b * T + t) * C + c) * HW + p);
        float dz = ld(dy, (((i64)b * T + t) * C + oc) * HW + p);
        float dzs = inside ? ld(dy, (((i64)b * T + tp) * C + oc) * HW + p) : 0.0f;
        acc += xs * (dzs - dz);
    }
    float g = tanhf(ld(a, i));
    st(da, i, acc * (1.0f - g * g));
}

// Entry points, one per kernel and element type (suffix _f32 or _bf16).
#define GSM_ENTRY_POINTS(D, S)                                                                          \
extern "C" __global__ void gate_conv_fwd_##S(const D* r, const D* w, const D* b, D* o,                  \
                                             int B, int T, int C, int H, int W)                         \
    { gate_conv_fwd(r, w, b, o, B, T, C, H, W); }                                                       \
extern "C" __global__ void gate_conv_bwd_input_##S(const D* da, const D* w, D* dr,                      \
                                                   int B, int T, int C, int H, int W)                   \
    { gate_conv_bwd_input(da, w, dr, B, T, C, H, W); }                                                  \
extern "C" __global__ void gate_conv_bwd_weight_##S(const D* r, const D* da, float* dw, float* db,      \
                                                    int B, int T, int C, int H, int W)                  \
    { gate_conv_bwd_weight(r, da, dw, db, B, T, C, H, W); }                                             \
extern "C" __global__ void shift_fwd_##S(const D* x, const D* a, D* y, int B, int T, int C, int HW)     \
    { shift_fwd(x, a, (const D*)0, (const D*)0, y, B, T, C, HW, 0.0f); }                                \
extern "C" __global__ void affine_act_##S(const D* x, const D* s, const D* b, D* y,                      \
                                          int B, int T, int C, int HW, float mx)                        \
    { affine_act(x, s, b, y, B, T, C, HW, mx); }                                                        \
extern "C" __global__ void shift_fwd_affine_##S(const D* x, const D* a, const D* s, const D* b, D* y,    \
                                                int B, int T, int C, int HW, float mx)                  \
    { shift_fwd(x, a, s, b, y, B, T, C, HW, mx); }                                                      \
extern "C" __global__ void shift_bwd_input_##S(const D* a, const D* dy, D* dx,                          \
                                               int B, int T, int C, int HW)                             \
    { shift_bwd_input(a, dy, dx, B, T, C, HW); }                                                        \
extern "C" __global__ void shift_bwd_gate_##S(const D* x, const D* a, const D* dy, D* da,               \
                                              int B, int T, int C, int HW)                              \
    { shift_bwd_gate(x, a, dy, da, B, T, C, HW); }                                                      \
extern "C" __global__ void unit_gates_nhwc_##S(const D* x, const D* w, const D* b, const D* s,           \
                                               const D* sb, float* g, int B, int T, int C, int H, int W) \
    { unit_gates_nhwc(x, w, b, s, sb, g, B, T, C, H, W); }                                              \
extern "C" __global__ void unit_shift_nhwc_##S(const D* x, const float* g, const D* ps, const D* pb,     \
                                               D* y, int B, int T, int C, int HW, float mx)             \
    { unit_shift_nhwc(x, g, ps, pb, y, B, T, C, HW, mx); }
GSM_ENTRY_POINTS(float, f32)
GSM_ENTRY_POINTS(bf16, bf16)
"#;

const NAMES: [&str; 10] = [
    "gate_conv_fwd",
    "gate_conv_bwd_input",
    "gate_conv_bwd_weight",
    "shift_fwd",
    "shift_bwd_input",
    "shift_bwd_gate",
    "affine_act",
    "shift_fwd_affine",
    "unit_gates_nhwc",
    "unit_shift_nhwc",
];

/// Element type of a call's tensors (the weight and bias gradients are always float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    Bf16,
}

impl Elem {
    fn suffix(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// Every entry point: each kernel for each element type.
fn entry_points() -> impl Iterator<Item = String> {
    NAMES.into_iter().flat_map(|n| [Elem::F32, Elem::Bf16].map(|e| format!("{n}_{}", e.suffix())))
}

/// Compiles [`SOURCE`] to PTX with NVRTC (no GPU needed; used by a test where NVRTC exists).
pub fn compile() -> Result<cudarc::nvrtc::Ptx, String> {
    preload_nvrtc();
    let opts = CompileOptions { arch: Some("compute_80"), ..Default::default() };
    compile_ptx_with_opts(SOURCE, opts).map_err(|e| format!("NVRTC could not compile the fused GSM kernels: {e:?}"))
}

/// Makes NVRTC loadable without `LD_LIBRARY_PATH`: when `libnvrtc.so.13` is not on the
/// library path, loads it (and its builtins) from the `nvidia/cu13/lib` folder of the pip
/// wheels next to the libtorch this process runs on. cudarc then finds the library already
/// loaded under its soname. Best effort: on failure NVRTC's own error is reported later.
pub fn preload_nvrtc() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        if dlopen("libnvrtc.so.13") {
            return;
        }
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
        let Some(torch_lib) = maps
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .find(|p| p.ends_with("/libtorch_cpu.so"))
            .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
        else {
            return;
        };
        // site-packages/torch/lib → site-packages/nvidia/cu13/lib
        let Some(site) = torch_lib.parent().and_then(|t| t.parent()) else { return };
        let dir = site.join("nvidia/cu13/lib");
        for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
            dlopen(&dir.join(name).to_string_lossy());
        }
    });
}

/// `dlopen(name, RTLD_NOW | RTLD_GLOBAL)`; whether it succeeded. The handle is kept (never
/// closed) so the library stays loaded for later lookups by soname.
fn dlopen(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else { return false };
    // SAFETY: a NUL-terminated path; loading NVRTC runs no initialisers with preconditions.
    !unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null()
}

/// The loaded kernels of one GPU.
pub struct Kernels {
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
}

/// One GPU's kernels, or why they could not be loaded.
type Loaded = Result<Arc<Kernels>, String>;

/// The kernels for GPU `ordinal`, compiled and loaded on first use; `Err` says why they are
/// not available (no driver, no NVRTC, …), in which case GSM runs composed.
pub fn kernels(ordinal: usize) -> Result<Arc<Kernels>, String> {
    static LOADED: OnceLock<Mutex<HashMap<usize, Loaded>>> = OnceLock::new();
    let mut map = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(ordinal).or_insert_with(|| load(ordinal)).clone()
}

fn load(ordinal: usize) -> Result<Arc<Kernels>, String> {
    let ptx = compile()?;
    let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
    let module = ctx.load_module(ptx).map_err(|e| format!("loading the fused GSM kernels: {e:?}"))?;
    let mut functions = HashMap::new();
    for name in entry_points() {
        let f = module.load_function(&name).map_err(|e| format!("kernel {name}: {e:?}"))?;
        functions.insert(name, f);
    }
    Ok(Arc::new(Kernels { stream: ctx.default_stream(), functions }))
}

/// Raw device pointers of libtorch tensors, as kernel arguments.
pub type Ptr = u64;

const BLOCK: u32 = 256;

/// A 1-D grid with one thread per element.
fn elements(n: usize) -> (u32, u32) {
    (u32::try_from(n.div_ceil(BLOCK as usize)).expect("grid fits in u32"), 1)
}

impl Kernels {
    /// Launches kernel `name` for `elem` on `grid` blocks of 256 threads (see [`elements`]).
    fn launch(&self, name: &str, elem: Elem, grid: (u32, u32), ptrs: &[Ptr], dims: &[i32]) {
        self.launch_with(name, elem, grid, ptrs, dims, &[]);
    }

    /// [`Self::launch`] with float arguments after the sizes.
    fn launch_with(&self, name: &str, elem: Elem, grid: (u32, u32), ptrs: &[Ptr], dims: &[i32], scalars: &[f32]) {
        let name = format!("{name}_{}", elem.suffix());
        let f = &self.functions[&name];
        let mut args = self.stream.launch_builder(f);
        for p in ptrs {
            args.arg(p);
        }
        for d in dims {
            args.arg(d);
        }
        for v in scalars {
            args.arg(v);
        }
        let cfg = LaunchConfig { grid_dim: (grid.0, grid.1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: every pointer is a live, contiguous libtorch tensor on this device of `elem`
        // (float32 for the weight/bias gradients) with the shape the kernel expects for `dims`
        // (checked by the caller), and the kernels only index within those shapes.
        unsafe { args.launch(cfg) }.unwrap_or_else(|e| panic!("launching {name}: {e:?}"));
    }

    fn dims5(d: Dims) -> [i32; 5] {
        [d.b, d.t, d.c, d.h, d.w].map(|v| i32::try_from(v).expect("GSM dimension fits in i32"))
    }

    fn dims4(d: Dims) -> [i32; 4] {
        [d.b, d.t, d.c, d.h * d.w].map(|v| i32::try_from(v).expect("GSM dimension fits in i32"))
    }

    /// `out` (B, 2, T, H, W) from `r`, `weight`, `bias`.
    pub fn gate_conv_forward(&self, d: Dims, e: Elem, r: Ptr, weight: Ptr, bias: Ptr, out: Ptr) {
        self.launch("gate_conv_fwd", e, elements(d.b * 2 * d.t * d.h * d.w), &[r, weight, bias, out], &Self::dims5(d));
    }

    /// `dr` from `da`; `dw` and `db` (zero-initialised) accumulate the weight and bias
    /// gradients (float32). Inputs `[r, weight, da]`, outputs `[dr, dw, db]`.
    pub fn gate_conv_backward(&self, d: Dims, e: Elem, [r, weight, da]: [Ptr; 3], [dr, dw, db]: [Ptr; 3]) {
        self.launch(
            "gate_conv_bwd_input",
            e,
            elements(d.b * d.t * d.c * d.h * d.w),
            &[da, weight, dr],
            &Self::dims5(d),
        );
        // One block column per (gate, channel); positions split over up to 64 blocks each.
        let chunks = (d.b * d.t * d.h * d.w).div_ceil(BLOCK as usize * 16).clamp(1, 64) as u32;
        self.launch("gate_conv_bwd_weight", e, (d.c as u32, chunks), &[r, da, dw, db], &Self::dims5(d));
    }

    /// `y` from `x` and the gate logits `a`.
    pub fn shift_forward(&self, d: Dims, e: Elem, x: Ptr, a: Ptr, y: Ptr) {
        self.launch("shift_fwd", e, elements(d.b * d.t * d.c * d.h * d.w), &[x, a, y], &Self::dims4(d));
    }

    /// `y` = min(max(scale·x + shift, 0), max) per channel (the GSM unit's BN3d and ReLU).
    pub fn affine_act(&self, d: Dims, e: Elem, [x, scale, shift]: [Ptr; 3], y: Ptr, max: f32) {
        let n = elements(d.b * d.t * d.c * d.h * d.w);
        self.launch_with("affine_act", e, n, &[x, scale, shift, y], &Self::dims4(d), &[max]);
    }

    /// The shift of `x` by `a`, then the unit's BN (`scale`, `shift`) and activation.
    pub fn shift_forward_affine(&self, d: Dims, e: Elem, [x, a, scale, shift]: [Ptr; 4], y: Ptr, max: f32) {
        let n = elements(d.b * d.t * d.c * d.h * d.w);
        self.launch_with("shift_fwd_affine", e, n, &[x, a, scale, shift, y], &Self::dims4(d), &[max]);
    }

    /// The whole inference unit on a channels-last `x`: the `gates` (float32, tanh applied) from
    /// `x`, the gate `weight` and `bias`, GSM's BN3d in affine form (`scale`, `shift`); then `y`
    /// (channels-last) = the gated shift of `x` with the unit's BN in affine form
    /// (`[post scale, post shift]`) and activation clamped at `max`.
    pub fn unit_nhwc(
        &self,
        (d, e): (Dims, Elem),
        [x, weight, bias, scale, shift]: [Ptr; 5],
        post: [Ptr; 2],
        [gates, y]: [Ptr; 2],
        max: f32,
    ) {
        let positions = d.b * d.t * d.h * d.w;
        let inputs = [x, weight, bias, scale, shift, gates];
        self.launch("unit_gates_nhwc", e, elements(positions * 32), &inputs, &Self::dims5(d));
        let n = elements(positions * d.c);
        self.launch_with("unit_shift_nhwc", e, n, &[x, gates, post[0], post[1], y], &Self::dims4(d), &[max]);
    }

    /// `dx` and `da` from `dy`.
    /// Inputs `[x, a, dy]`, outputs `[dx, da]`.
    pub fn shift_backward(&self, d: Dims, e: Elem, [x, a, dy]: [Ptr; 3], [dx, da]: [Ptr; 2]) {
        self.launch("shift_bwd_input", e, elements(d.b * d.t * d.c * d.h * d.w), &[a, dy, dx], &Self::dims4(d));
        self.launch("shift_bwd_gate", e, elements(d.b * 2 * d.t * d.h * d.w), &[x, a, dy, da], &Self::dims4(d));
    }
}

#[cfg(test)]
mod tests {
    /// The kernels compile wherever NVRTC can be loaded (no GPU needed): from the pip torch's
    /// `nvidia/cu13/lib` next to the libtorch in use, or the library path. Without NVRTC the
    /// test says so and checks nothing else — the GPU run in `scripts/device-bench.sh` checks
    /// them against the fixture.
    #[test]
    fn kernels_compile_with_nvrtc() {
        match std::panic::catch_unwind(super::compile) {
            Ok(Ok(ptx)) => {
                let text = ptx.to_src();
                for name in super::entry_points() {
                    assert!(text.contains(&format!(".entry {name}(")), "PTX lacks {name}");
                }
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {
                println!("SKIPPED: NVRTC library not loadable here (set LD_LIBRARY_PATH to torch's nvidia/cu13/lib)")
            }
        }
    }
}
