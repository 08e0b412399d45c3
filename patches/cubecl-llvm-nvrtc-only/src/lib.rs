//! The part of cubecl-llvm's API that cubecl-cuda names, without LLVM (see Cargo.toml).
//!
//! cubecl-cuda picks its compiler once, from its `cpp` feature: with it (gateshift's `cuda`
//! feature turns it on) every kernel goes through NVRTC and nothing here runs. Should a build
//! reach the LLVM route anyway, [`PlironCompiler`] fails with an error naming the cause
//! instead of producing PTX.

use cubecl_core::ir::DeviceProperties;
use cubecl_core::ir::nvidia::SmArch;
use cubecl_environment::backtrace::BackTrace;
use cubecl_runtime::compiler::{CompilationError, Compiler};
use cubecl_runtime::kernel::KernelDefinition;

pub use cubecl_runtime::kernel::BufferIOAttr;

/// Targets of the LLVM route; only NVPTX is named by cubecl-cuda.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    #[default]
    Nvptx,
}

/// The LLVM route's compiler. Every compilation is refused: this build has no LLVM.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

/// Options cubecl-cuda fills in for the LLVM route.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    pub arch: Option<()>,
    pub sm_arch: Option<SmArch>,
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    pub grid_constants: bool,
}

/// PTX the LLVM route would have produced.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    pub ptx: Vec<core::ffi::c_char>,
    pub entrypoint: String,
    pub ir: String,
    pub shared_memory_size: usize,
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM route's compiler returns.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlironArtifact::NvptxCode(module) => f.write_str(&module.ir),
        }
    }
}

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &PlironOptions,
    ) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic {
            reason: "this build has no LLVM (cubecl-llvm is replaced by gateshift's \
                     patches/cubecl-llvm-nvrtc-only): build with cubecl's `cuda-cpp` feature \
                     so that kernels are compiled by NVRTC"
                .to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}

pub mod nvptx {
    pub mod ptx_version {
        use core::fmt;

        /// A PTX ISA version (8.7 is `87`); only a cache-key component on the NVRTC route.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion(u32);

        impl PtxVersion {
            /// The PTX version a CUDA driver loads (`driver` as `cuDriverGetVersion`
            /// reports it, 12.8 = 12080): CUDA 12.x loads PTX 8.x with x the minor version
            /// (12.0 → 8.0), CUDA 13.x loads 9.x. `None` before CUDA 12, where the LLVM
            /// route would leave the choice to LLVM.
            pub fn for_driver(driver: i32) -> Option<Self> {
                let (major, minor) = (driver / 1000, (driver % 1000) / 10);
                match major {
                    12 => Some(Self(80 + minor.min(9) as u32)),
                    m if m >= 13 => Some(Self(90 + minor.min(9) as u32)),
                    _ => None,
                }
            }
        }

        impl fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "ptx{}", self.0)
            }
        }
    }
}

pub mod shared {
    pub mod lowered_features {
        use super::super::DeviceProperties;

        /// The GPU a device's advertised features would be narrowed for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            Nvptx,
        }

        /// cubecl-cuda narrows the features it advertises only when the LLVM route compiles;
        /// on the NVRTC route it does not call this. Nothing is narrowed here, because
        /// nothing is ever compiled by the LLVM route in this build.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
    }
}
