//! Which burn backends are compiled in, and `--backend` parsing. Model code never names a
//! backend: the device a tensor lives on decides.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Backends compiled into this binary, in the order `auto` tries them.
pub fn available() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(feature = "tch") {
        names.extend(["tch", "flex", "tch-cuda"]);
    } else {
        names.push("flex");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    names
}

/// The inference device for a backend name (`flex`, `tch`, `tch-cuda[:N]`, `cuda[:N]`, `wgpu`,
/// `auto`).
pub fn device(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, i.parse::<usize>().map_err(|_| anyhow::anyhow!("bad device index in --backend {name}"))?),
        None => (name, 0),
    };
    let _ = index;
    Ok(match kind {
        "flex" => Device::flex(),
        // The first compiled-in backend that opens (`cuda` falls through without a GPU).
        "auto" => {
            let mut failures = Vec::new();
            for candidate in available() {
                match device(candidate) {
                    Ok(d) => return Ok(d),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            bail!("--backend auto: no backend opens: {}", failures.join("; "))
        }
        // burn 0.22 marks its libtorch backend deprecated in favour of the CubeCL ones; it stays
        // for libtorch's CPU speed and its cuDNN GPU route (`tch-cuda`).
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" => Device::libtorch(),
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch-cuda" => {
            let seen = tch::Cuda::device_count();
            if index as i64 >= seen {
                bail!("--backend {name}: libtorch sees {seen} CUDA device(s) (no GPU, or a CPU-only torch)");
            }
            // cuDNN picks the fastest algorithm per convolution shape on first use, as the
            // official training scripts ask (`cudnn.benchmark = True`).
            tch::Cuda::cudnn_set_benchmark(true);
            Device::libtorch_cuda(index)
        }
        // burn's CubeCL CUDA backend: the driver and NVRTC are loaded at run time.
        #[cfg(feature = "cuda")]
        "cuda" => {
            cuda_ready(index).map_err(|e| anyhow::anyhow!("--backend {name}: {e}"))?;
            Device::cuda(index)
        }
        // burn's CubeCL wgpu backend on wgpu's preferred adapter (a GPU if there is one, else
        // a CPU implementation such as Mesa's lavapipe).
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
            // The runtime opens the adapter on first use and panics if there is none.
            let probe = std::panic::AssertUnwindSafe(device.clone());
            std::panic::catch_unwind(move || probe.identity()).map_err(|_| {
                anyhow::anyhow!(
                    "--backend wgpu: no adapter could be opened (no GPU and no software Vulkan; \
                     Debian: apt-get install mesa-vulkan-drivers)"
                )
            })?;
            device
        }
        other => bail!("backend {other:?} is not compiled into this binary (available: {})", available().join(", ")),
    })
}

/// Checks what burn's CubeCL CUDA runtime loads at run time, so that a machine without it gets
/// an error instead of a panic inside the runtime: the driver, NVRTC and the device.
#[cfg(feature = "cuda")]
fn cuda_ready(index: usize) -> Result<()> {
    // With libtorch in the binary, NVRTC may come from its pip wheels without LD_LIBRARY_PATH.
    #[cfg(feature = "tch")]
    crate::ops::gate_shift::cuda::preload_nvrtc();
    // SAFETY: these only try to open the shared libraries.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("the CUDA driver (libcuda.so) is not on the library path (no NVIDIA driver here?)");
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        bail!(
            "NVRTC (libnvrtc.so) is not on the library path: add the CUDA toolkit's lib64, or the \
             nvidia/cu13/lib folder of a pip torch, to LD_LIBRARY_PATH"
        );
    }
    let seen = cudarc::driver::CudaContext::device_count().map_err(|e| anyhow::anyhow!("CUDA: {e:?}"))?;
    if index as i64 >= i64::from(seen) {
        bail!("the CUDA driver sees {seen} device(s)");
    }
    Ok(())
}

/// Whether `device` is burn's pure-Rust CPU backend (with or without autodiff), where
/// gateshift's own CPU ops (`ops::conv::gemm`, `ops::pool`) run.
pub fn is_flex(device: &Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// Whether `device` computes on this machine's CPU (flex, libtorch's CPU), where many small
/// ops on cache-resident tensors beat a few large ones; on GPUs (and on CubeCL runtimes,
/// whose every op is a kernel launch) the opposite holds.
#[allow(deprecated)] // burn 0.22 marks its libtorch backend deprecated; `tch` still uses it
pub fn is_host_cpu(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "tch")]
        DispatchDevice::LibTorch(burn::backend::LibTorchDevice::Cpu) => true,
        _ => false,
    }
}

/// The device as its runtime names it (CubeCL runtimes only; `None` elsewhere).
pub fn describe(device: &Device) -> Option<String> {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    if let Some(id) = device.identity() {
        return Some(format!("{} ({})", id.name, id.fingerprint));
    }
    let _ = device;
    None
}

/// Memory in use on the CUDA device behind a `tch-cuda[:N]` or `cuda[:N]` backend name,
/// device-wide (`cuMemGetInfo`), in bytes. On a lent GPU that is this process's CUDA context
/// plus what libtorch's caching allocator or CubeCL's pool holds; neither gives memory back,
/// so read after a run it is the run's peak reservation. `None` for other backends or without
/// a driver.
pub fn cuda_memory_in_use(name: &str) -> Option<u64> {
    #[cfg(any(feature = "tch", feature = "cuda"))]
    {
        let (kind, index) = name.split_once(':').unwrap_or((name, "0"));
        if !matches!(kind, "tch-cuda" | "cuda") {
            return None;
        }
        // SAFETY: only tries to open the driver library; cudarc panics on calls without it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return None;
        }
        let ctx = cudarc::driver::CudaContext::new(index.parse().ok()?).ok()?;
        let (free, total) = ctx.mem_get_info().ok()?;
        Some((total - free) as u64)
    }
    #[cfg(not(any(feature = "tch", feature = "cuda")))]
    {
        let _ = name;
        None
    }
}
