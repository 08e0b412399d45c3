//! Run-time AVX2 dispatch for hand-written CPU loops: the default build targets baseline
//! x86-64 (SSE2), so a loop the compiler vectorises would use 4-wide registers; compiled a
//! second time with AVX2 enabled it uses 8-wide ones where the CPU has them.

/// Defines `fn $name(args)` that runs `$body(args)` compiled for AVX2 where the CPU has it
/// (checked at run time), else as baseline code. Same instructions but wider, so same results.
macro_rules! with_avx2 {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use with_avx2;
