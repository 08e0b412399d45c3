//! CUDA kernels of the fused GSM for libtorch's GPU tensors (`--features tch`, backend
//! `tch-cuda`), float32 and bfloat16 (computed in float32): the same computations as
//! `ops/gate_shift/kernels.rs`, one thread per output value,
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
pub const SOURCE: &str = include_str!("cuda.cu");

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
