//! Which burn backends are compiled in, and `--backend` parsing. Model code never names a
//! backend: the device a tensor lives on decides.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Backends compiled into this binary, in the order `auto` tries them.
pub fn available() -> Vec<&'static str> {
    #[cfg(feature = "tch")]
    return vec!["tch", "flex", "tch-cuda"];
    #[cfg(not(feature = "tch"))]
    vec!["flex"]
}

/// The inference device for a backend name (`flex`, `tch`, `tch-cuda[:N]`, `auto`).
pub fn device(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, i.parse::<usize>().map_err(|_| anyhow::anyhow!("bad device index in --backend {name}"))?),
        None => (name, 0),
    };
    let _ = index;
    Ok(match kind {
        "flex" => Device::flex(),
        "auto" => return device(available()[0]),
        // burn 0.22 marks its libtorch backend deprecated in favour of CubeCL ones, whose CUDA
        // build cannot be made offline (see the README); it is the GPU route that builds.
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
            Device::libtorch_cuda(index)
        }
        other => bail!("backend {other:?} is not compiled into this binary (available: {})", available().join(", ")),
    })
}
