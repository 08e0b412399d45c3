//! MFNet's motion branch `y = x + α ⊙ (shift_d(x[t+1]) − x[t])` as one op (`model::temporal::
//! mfnet`): one route, flex (`flex.rs`, forward and backward in one pass each over the map);
//! elsewhere, and with `GATESHIFT_FUSED_MFNET=0`, the composition of burn ops in `mfnet.rs`,
//! the reference it is tested against.

mod flex;

pub use flex::{Motion, MotionBranch, applies, group, motion_branch};
