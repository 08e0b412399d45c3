//! The C ABI of `shim.cpp` (compiled by build.rs against the libtorch torch-sys links):
//! libtorch's backward functions, `native_batch_norm`, cuDNN's fused convolution + ReLU and
//! `at::parallel_for`, which the `tch` crate does not bind, with safe wrappers.

// burn 0.22 marks its libtorch backend deprecated; it is the backend these calls serve.
#![allow(deprecated)]

use burn::backend::libtorch::TchTensor;

pub(super) mod ffi {
    use std::os::raw::{c_char, c_int};
    use torch_sys::C_tensor;

    // src/ops/torch/shim.cpp, compiled by build.rs.
    unsafe extern "C" {
        pub fn gs_free(message: *mut c_char);
        pub fn gs_convolution_backward(
            dy: *const C_tensor,
            x: *const C_tensor,
            w: *const C_tensor,
            has_bias: c_int,
            stride: *const i64,
            padding: *const i64,
            dilation: *const i64,
            groups: i64,
            mask: *const c_int,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        pub fn gs_batch_norm_forward(
            x: *const C_tensor,
            w: *const C_tensor,
            b: *const C_tensor,
            running_mean: *const C_tensor,
            running_var: *const C_tensor,
            train: c_int,
            momentum: f64,
            eps: f64,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        pub fn gs_conv2d_bias_relu(
            x: *const C_tensor,
            w: *const C_tensor,
            b: *const C_tensor,
            stride: *const i64,
            padding: *const i64,
            dilation: *const i64,
            groups: i64,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
        pub fn gs_parallel_for(
            n: i64,
            body: extern "C" fn(*mut std::ffi::c_void, i64, i64),
            ctx: *mut std::ffi::c_void,
        ) -> *mut c_char;
        pub fn gs_batch_norm_backward(
            dy: *const C_tensor,
            x: *const C_tensor,
            w: *const C_tensor,
            running_mean: *const C_tensor,
            running_var: *const C_tensor,
            save_mean: *const C_tensor,
            save_invstd: *const C_tensor,
            train: c_int,
            eps: f64,
            mask: *const c_int,
            out: *mut *mut C_tensor,
        ) -> *mut c_char;
    }
}

/// A [`crate::ops::gate_shift::kernels::ParallelFor`] on libtorch's intra-op thread pool
/// (`at::parallel_for`): the fused GSM's CPU kernels run there between libtorch's ops. A
/// panic in `body` is caught on its thread (it must not unwind through C++) and resumed here.
pub fn parallel_for(n: usize, body: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    type Panic = Box<dyn std::any::Any + Send>;
    struct Ctx<'a> {
        body: &'a (dyn Fn(std::ops::Range<usize>) + Sync),
        panic: std::sync::Mutex<Option<Panic>>,
    }
    extern "C" fn run(ctx: *mut std::ffi::c_void, begin: i64, end: i64) {
        // SAFETY: `ctx` is the `Ctx` below, alive until `gs_parallel_for` returns.
        let ctx = unsafe { &*(ctx as *const Ctx) };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| (ctx.body)(begin as usize..end as usize))) {
            ctx.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
        }
    }
    let ctx = Ctx { body, panic: std::sync::Mutex::new(None) };
    // SAFETY: `run` matches the shim's callback type and reads `ctx` only during the call.
    let err = unsafe { ffi::gs_parallel_for(n as i64, run, &ctx as *const Ctx as *mut std::ffi::c_void) };
    if !err.is_null() {
        // SAFETY: a message from the shim, freed with its own allocator.
        let msg = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy().into_owned();
        unsafe { ffi::gs_free(err) };
        panic!("libtorch parallel_for: {msg}");
    }
    if let Some(p) = ctx.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(p);
    }
}

/// Calls a shim function with a three-tensor output array; a libtorch error becomes a panic
/// with libtorch's message (as `tch`'s own infallible calls do).
pub(super) fn shim(
    what: &str,
    f: impl FnOnce(*mut *mut torch_sys::C_tensor) -> *mut std::os::raw::c_char,
) -> [Option<tch::Tensor>; 3] {
    let mut out = [std::ptr::null_mut(); 3];
    let err = f(out.as_mut_ptr());
    if !err.is_null() {
        // SAFETY: the shim returns a NUL-terminated strdup'd message, freed once here.
        let message = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy().into_owned();
        unsafe { ffi::gs_free(err) };
        panic!("libtorch {what}: {message}");
    }
    // SAFETY: each non-null entry is a heap tensor the shim allocated for us to own.
    out.map(|p| (!p.is_null()).then(|| unsafe { tch::Tensor::from_ptr(p) }))
}

/// relu(conv2d(x, w) + b) in one libtorch call (`gs_conv2d_bias_relu`: cuDNN's fused
/// convolution on CUDA), `x` already in the memory order the geometry asks for; `Err` with
/// libtorch's message where cuDNN has no fused engine for the shape.
pub(crate) fn conv2d_bias_relu(
    [x, w, b]: [&tch::Tensor; 3],
    [stride, padding, dilation]: [[i64; 2]; 3],
    groups: i64,
) -> Result<tch::Tensor, String> {
    let mut out = [std::ptr::null_mut(); 1];
    // SAFETY: the pointers are live tensors and arrays of two; the shim writes one tensor or
    // returns an error message.
    let err = unsafe {
        ffi::gs_conv2d_bias_relu(
            ptr(x),
            ptr(w),
            ptr(b),
            stride.as_ptr(),
            padding.as_ptr(),
            dilation.as_ptr(),
            groups,
            out.as_mut_ptr(),
        )
    };
    if !err.is_null() {
        // SAFETY: a NUL-terminated strdup'd message, freed once here.
        let message = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy().into_owned();
        unsafe { ffi::gs_free(err) };
        return Err(message);
    }
    // SAFETY: a heap tensor the shim allocated for us to own.
    Ok(unsafe { tch::Tensor::from_ptr(out[0]) })
}

pub(super) fn ptr(t: &tch::Tensor) -> *const torch_sys::C_tensor {
    t.as_ptr()
}

pub(super) fn opt_ptr(t: Option<&TchTensor>) -> *const torch_sys::C_tensor {
    t.map_or(std::ptr::null(), |t| t.tensor.as_ptr())
}

pub(super) fn mask(grads: [bool; 3]) -> [std::os::raw::c_int; 3] {
    grads.map(std::os::raw::c_int::from)
}
