//! TSM's shift along time as one op (`flex.rs`: three block copies per frame, the adjoint
//! shift as backward); `Shift` also tells the GEMM convolution how to read its input through
//! the shift (`conv::conv2d_shifted`). The reference is `TemporalShift::forward_composed`.

mod flex;

pub use flex::{Shift, TimeShift, TimeShiftKernels, applies, available, enabled, time_shift};
