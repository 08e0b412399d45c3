//! CUDA kernels of the fused GSM for libtorch's GPU tensors (`--features tch`, backend
//! `tch-cuda`): the same five computations as `gsm_kernels.rs`, one thread per output value,
//! compiled at run time with NVRTC and launched through the CUDA driver (both loaded
//! dynamically by `cudarc`, as burn's CubeCL runtimes do). Tensors stay libtorch's; kernels
//! run on the device's legacy default stream, the one libtorch uses unless told otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::gsm_kernels::Dims;

/// The kernel source. Layouts: feature maps (B·T, C, H, W), gates (B, 2, T, H, W), gate weight
/// (2, C/2, 3, 3, 3); shift +1 (from t+1) for half 1, −1 for half 2; per-half interleave.
pub const SOURCE: &str = r#"
typedef long long i64;
// GSM_HOST_EMULATION: scripts/cuda_kernels_host_check.py compiles this file as C++ and runs
// every thread in turn; a warp sum is then each thread's own value.
#ifdef GSM_HOST_EMULATION
__device__ __forceinline__ float warp_sum(float v) { return v; }
__device__ __forceinline__ bool warp_leader() { return true; }
#else
__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    return v;
}
__device__ __forceinline__ bool warp_leader() { return (threadIdx.x & 31) == 0; }
#endif
__device__ __forceinline__ int interleaved(int c, int C) {
    int half = C / 2, quarter = C / 4, k = c / half, j = c % half;
    return k * half + (j % quarter) * 2 + j / quarter;
}

extern "C" __global__ void gate_conv_fwd(const float* r, const float* w, const float* bias, float* out,
                                         int B, int T, int C, int H, int W) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * 2 * T * H * W) return;
    int x = i % W; i64 q = i / W; int y = q % H; q /= H; int t = q % T; q /= T; int k = q % 2; int b = q / 2;
    int half = C / 2; i64 hw = (i64)H * W;
    float acc = bias[k];
    for (int j = 0; j < half; ++j) {
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            const float* plane = r + (((i64)b * T + u) * C + k * half + j) * hw;
            const float* kw = w + ((i64)(k * half + j) * 3 + dt) * 9;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = y + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = x + dx - 1;
                    if (sx >= 0 && sx < W) acc += kw[dy * 3 + dx] * plane[(i64)sy * W + sx];
                }
            }
        }
    }
    out[i] = acc;
}

extern "C" __global__ void gate_conv_bwd_input(const float* da, const float* w, float* dr,
                                               int B, int T, int C, int H, int W) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * H * W) return;
    int x = i % W; i64 q = i / W; int y = q % H; q /= H; int c = q % C; q /= C; int u = q % T; int b = q / T;
    int half = C / 2, k = c / half, j = c % half; i64 hw = (i64)H * W;
    float acc = 0.0f;
    for (int dt = 0; dt < 3; ++dt) {
        int t = u + 1 - dt;
        if (t < 0 || t >= T) continue;
        const float* plane = da + (((i64)b * 2 + k) * T + t) * hw;
        const float* kw = w + ((i64)(k * half + j) * 3 + dt) * 9;
        for (int dy = 0; dy < 3; ++dy) {
            int oy = y + 1 - dy;
            if (oy < 0 || oy >= H) continue;
            for (int dx = 0; dx < 3; ++dx) {
                int ox = x + 1 - dx;
                if (ox >= 0 && ox < W) acc += kw[dy * 3 + dx] * plane[(i64)oy * W + ox];
            }
        }
    }
    dr[i] = acc;
}

// Grid (C, chunks): block (k·C/2 + j, chunk) sums its share of positions into 27 weight
// gradients (and, for j = 0, the bias gradient); warps reduce, then add atomically into the
// zero-initialised dw / db.
extern "C" __global__ void gate_conv_bwd_weight(const float* r, const float* da, float* dw, float* db,
                                                int B, int T, int C, int H, int W) {
    int kj = blockIdx.x, half = C / 2, k = kj / half, j = kj % half;
    i64 hw = (i64)H * W, n = (i64)B * T * hw;
    float acc[28];
    for (int q = 0; q < 28; ++q) acc[q] = 0.0f;
    for (i64 p = (i64)blockIdx.y * blockDim.x + threadIdx.x; p < n; p += (i64)gridDim.y * blockDim.x) {
        int x = p % W; i64 q = p / W; int y = q % H; q /= H; int t = q % T; int b = q / T;
        float g = da[(((i64)b * 2 + k) * T + t) * hw + (i64)y * W + x];
        acc[27] += g;
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            const float* plane = r + (((i64)b * T + u) * C + k * half + j) * hw;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = y + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = x + dx - 1;
                    if (sx >= 0 && sx < W) acc[dt * 9 + dy * 3 + dx] += g * plane[(i64)sy * W + sx];
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

extern "C" __global__ void shift_fwd(const float* x, const float* a, float* y, int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    int p = i % HW; i64 q = i / HW; int c = q % C; q /= C; int t = q % T; int b = q / T;
    int k = c / (C / 2);
    float g = tanhf(a[(((i64)b * 2 + k) * T + t) * HW + p]);
    float xs = x[i];
    float v = xs - g * xs;
    int tn = k == 0 ? t + 1 : t - 1;
    if (tn >= 0 && tn < T) {
        float gn = tanhf(a[(((i64)b * 2 + k) * T + tn) * HW + p]);
        v = gn * x[(((i64)b * T + tn) * C + c) * HW + p] + v;
    }
    y[(((i64)b * T + t) * C + interleaved(c, C)) * HW + p] = v;
}

extern "C" __global__ void shift_bwd_input(const float* a, const float* dy, float* dx, int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    int p = i % HW; i64 q = i / HW; int c = q % C; q /= C; int t = q % T; int b = q / T;
    int k = c / (C / 2), oc = interleaved(c, C);
    float g = tanhf(a[(((i64)b * 2 + k) * T + t) * HW + p]);
    float dz = dy[(((i64)b * T + t) * C + oc) * HW + p];
    float v = dz - g * dz;
    int tp = k == 0 ? t - 1 : t + 1;
    if (tp >= 0 && tp < T) v = v + g * dy[(((i64)b * T + tp) * C + oc) * HW + p];
    dx[i] = v;
}

extern "C" __global__ void shift_bwd_gate(const float* x, const float* a, const float* dy, float* da,
                                          int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * 2 * T * HW) return;
    int p = i % HW; i64 q = i / HW; int t = q % T; q /= T; int k = q % 2; int b = q / 2;
    int half = C / 2, tp = k == 0 ? t - 1 : t + 1;
    bool inside = tp >= 0 && tp < T;
    float acc = 0.0f;
    for (int j = 0; j < half; ++j) {
        int c = k * half + j, oc = interleaved(c, C);
        float xs = x[(((i64)b * T + t) * C + c) * HW + p];
        float dz = dy[(((i64)b * T + t) * C + oc) * HW + p];
        float dzs = inside ? dy[(((i64)b * T + tp) * C + oc) * HW + p] : 0.0f;
        acc += xs * (dzs - dz);
    }
    float g = tanhf(a[i]);
    da[i] = acc * (1.0f - g * g);
}
"#;

const NAMES: [&str; 6] =
    ["gate_conv_fwd", "gate_conv_bwd_input", "gate_conv_bwd_weight", "shift_fwd", "shift_bwd_input", "shift_bwd_gate"];

/// Compiles [`SOURCE`] to PTX with NVRTC (no GPU needed; used by a test where NVRTC exists).
pub fn compile() -> Result<cudarc::nvrtc::Ptx, String> {
    let opts = CompileOptions { arch: Some("compute_80"), ..Default::default() };
    compile_ptx_with_opts(SOURCE, opts).map_err(|e| format!("NVRTC could not compile the fused GSM kernels: {e:?}"))
}

/// The loaded kernels of one GPU.
pub struct Kernels {
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
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
    for name in NAMES {
        functions.insert(name, module.load_function(name).map_err(|e| format!("kernel {name}: {e:?}"))?);
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
    /// Launches `name` on `grid` blocks of 256 threads (see [`elements`]).
    fn launch(&self, name: &str, grid: (u32, u32), ptrs: &[Ptr], dims: &[i32]) {
        let f = &self.functions[name];
        let mut args = self.stream.launch_builder(f);
        for p in ptrs {
            args.arg(p);
        }
        for d in dims {
            args.arg(d);
        }
        let cfg = LaunchConfig { grid_dim: (grid.0, grid.1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: every pointer is a live, contiguous float32 libtorch tensor on this device with
        // the shape the kernel expects for `dims` (checked by the caller), and the kernels
        // only index within those shapes.
        unsafe { args.launch(cfg) }.unwrap_or_else(|e| panic!("launching {name}: {e:?}"));
    }

    fn dims5(d: Dims) -> [i32; 5] {
        [d.b, d.t, d.c, d.h, d.w].map(|v| i32::try_from(v).expect("GSM dimension fits in i32"))
    }

    fn dims4(d: Dims) -> [i32; 4] {
        [d.b, d.t, d.c, d.h * d.w].map(|v| i32::try_from(v).expect("GSM dimension fits in i32"))
    }

    /// `out` (B, 2, T, H, W) from `r`, `weight`, `bias`.
    pub fn gate_conv_forward(&self, d: Dims, r: Ptr, weight: Ptr, bias: Ptr, out: Ptr) {
        self.launch("gate_conv_fwd", elements(d.b * 2 * d.t * d.h * d.w), &[r, weight, bias, out], &Self::dims5(d));
    }

    /// `dr` from `da`; `dw` and `db` (zero-initialised) accumulate the weight and bias
    /// gradients. Inputs `[r, weight, da]`, outputs `[dr, dw, db]`.
    pub fn gate_conv_backward(&self, d: Dims, [r, weight, da]: [Ptr; 3], [dr, dw, db]: [Ptr; 3]) {
        self.launch("gate_conv_bwd_input", elements(d.b * d.t * d.c * d.h * d.w), &[da, weight, dr], &Self::dims5(d));
        // One block column per (gate, channel); positions split over up to 64 blocks each.
        let chunks = (d.b * d.t * d.h * d.w).div_ceil(BLOCK as usize * 16).clamp(1, 64) as u32;
        self.launch("gate_conv_bwd_weight", (d.c as u32, chunks), &[r, da, dw, db], &Self::dims5(d));
    }

    /// `y` from `x` and the gate logits `a`.
    pub fn shift_forward(&self, d: Dims, x: Ptr, a: Ptr, y: Ptr) {
        self.launch("shift_fwd", elements(d.b * d.t * d.c * d.h * d.w), &[x, a, y], &Self::dims4(d));
    }

    /// `dx` and `da` from `dy`.
    pub fn shift_backward(&self, d: Dims, x: Ptr, a: Ptr, dy: Ptr, dx: Ptr, da: Ptr) {
        self.launch("shift_bwd_input", elements(d.b * d.t * d.c * d.h * d.w), &[a, dy, dx], &Self::dims4(d));
        self.launch("shift_bwd_gate", elements(d.b * 2 * d.t * d.h * d.w), &[x, a, dy, da], &Self::dims4(d));
    }
}

#[cfg(test)]
mod tests {
    /// The kernels compile wherever NVRTC can be loaded (no GPU needed): with the pip torch's
    /// `nvidia/cu13/lib` on `LD_LIBRARY_PATH`. Without NVRTC the test says so and checks nothing
    /// else — the GPU run in `scripts/device-bench.sh` checks them against the fixture.
    #[test]
    fn kernels_compile_with_nvrtc() {
        match std::panic::catch_unwind(super::compile) {
            Ok(Ok(ptx)) => {
                let text = ptx.to_src();
                for name in super::NAMES {
                    assert!(text.contains(name), "PTX lacks {name}");
                }
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {
                println!("SKIPPED: NVRTC library not loadable here (set LD_LIBRARY_PATH to torch's nvidia/cu13/lib)")
            }
        }
    }
}
