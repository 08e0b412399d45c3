//! The one place that reads the `GATESHIFT_*` switches: each is read once per process, and
//! every op asks here whether its fast path is on. All default to on except where noted; `0`
//! turns one off (to compare the fast path with the reference, or to time both), `1` forces an
//! auto-detected one on.
//!
//! | switch | op | default |
//! |---|---|---|
//! | `GATESHIFT_GEMM_CONV` | `conv::gemm`, the flex convolution | on |
//! | `GATESHIFT_FAST_DEPTHWISE` | `depthwise::flex` | on |
//! | `GATESHIFT_FAST_POOL` | `pool::flex` | on |
//! | `GATESHIFT_FUSED_BN` | `batch_norm::flex`, the fused training BN | on |
//! | `GATESHIFT_FUSED_TSM` | `time_shift::flex` and the convolution reading through it | on |
//! | `GATESHIFT_FUSED_MFNET` | `motion_filter::flex`, MFNet's motion branch | on |
//! | `GATESHIFT_FUSED_GSF` | `gsf_fuse::flex`, GSF's fusion of shifted and residual parts | on |
//! | `GATESHIFT_FUSED_TAPS` | `tap_sum::flex`, the temporal taps of (2+1)D and GST summed | on |
//! | `GATESHIFT_FOLD_BN` | BN folded into the conv before it in inference | on |
//! | `GATESHIFT_TORCH_LAYERS` | `torch`: libtorch's conv and BN (`--features tch`) | CUDA; CPU inference |
//! | `GATESHIFT_CHANNELS_LAST` | `torch`: channels-last convolutions | CUDA; CPU inference |
//! | `GATESHIFT_CONV_RELU` | `torch`: cuDNN's fused conv + ReLU | off |
//! | `GATESHIFT_DEVICE_ALL_REDUCE` | `all_reduce::device`: NCCL between the GPUs of `train --devices` | on |

use std::sync::OnceLock;

/// Every switch, as read from the environment.
#[derive(Clone, Copy, Debug)]
pub struct Switches {
    pub gemm_conv: bool,
    pub fast_depthwise: bool,
    pub fast_pool: bool,
    pub fused_bn: bool,
    pub fused_tsm: bool,
    pub fused_mfnet: bool,
    pub fused_gsf: bool,
    pub fused_taps: bool,
    pub fold_bn: bool,
    /// `None`: decided per device (see `ops::torch::applies`).
    pub torch_layers: Option<bool>,
    pub channels_last: Option<bool>,
    pub conv_relu: bool,
    pub device_all_reduce: bool,
}

/// The switches of this process, read on first use.
pub fn switches() -> &'static Switches {
    static SWITCHES: OnceLock<Switches> = OnceLock::new();
    SWITCHES.get_or_init(|| Switches::from_env(|name| std::env::var(name).ok()))
}

impl Switches {
    /// The switches as `var` gives the variables (the environment, or a test's table).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let setting = |name: &str| match var(name).as_deref() {
            Some("0") => Some(false),
            Some("1") => Some(true),
            _ => None,
        };
        let on = |name: &str| setting(name) != Some(false);
        Self {
            gemm_conv: on("GATESHIFT_GEMM_CONV"),
            fast_depthwise: on("GATESHIFT_FAST_DEPTHWISE"),
            fast_pool: on("GATESHIFT_FAST_POOL"),
            fused_bn: on("GATESHIFT_FUSED_BN"),
            fused_tsm: on("GATESHIFT_FUSED_TSM"),
            fused_mfnet: on("GATESHIFT_FUSED_MFNET"),
            fused_gsf: on("GATESHIFT_FUSED_GSF"),
            fused_taps: on("GATESHIFT_FUSED_TAPS"),
            fold_bn: on("GATESHIFT_FOLD_BN"),
            torch_layers: setting("GATESHIFT_TORCH_LAYERS"),
            channels_last: setting("GATESHIFT_CHANNELS_LAST"),
            conv_relu: setting("GATESHIFT_CONV_RELU") == Some(true),
            device_all_reduce: on("GATESHIFT_DEVICE_ALL_REDUCE"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset means the default; only `0` turns an on-by-default switch off, only `1` turns
    /// the fused conv + ReLU on; the libtorch ones stay undecided unless set.
    #[test]
    fn switches_read_as_documented() {
        let none = Switches::from_env(|_| None);
        assert!(
            none.gemm_conv
                && none.fast_pool
                && none.fused_bn
                && none.fold_bn
                && !none.conv_relu
                && none.device_all_reduce
        );
        assert_eq!((none.torch_layers, none.channels_last), (None, None));
        let set = |value: &'static str| Switches::from_env(move |_| Some(value.to_string()));
        let off = set("0");
        assert!(!off.gemm_conv && !off.fast_depthwise && !off.fused_tsm && !off.fold_bn && !off.device_all_reduce);
        assert!(
            none.fused_mfnet
                && !off.fused_mfnet
                && none.fused_gsf
                && !off.fused_gsf
                && none.fused_taps
                && !off.fused_taps
        );
        assert_eq!(off.torch_layers, Some(false));
        let on = set("1");
        assert!(on.conv_relu && on.gemm_conv && on.torch_layers == Some(true));
        let other = set("yes");
        assert!(other.gemm_conv && !other.conv_relu && other.channels_last.is_none());
    }
}
