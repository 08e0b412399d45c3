//! The Caffe-style unit of BN-Inception and InceptionV3 (`model::layers::ConvBn`) as ONNX
//! nodes: conv → (temporal module) → BN → ReLU.

use anyhow::Result;

use super::graph::{Graph, Value};
use super::layers::{batch_norm, conv};
use super::temporal;
use crate::model::layers::ConvBn;

/// One Caffe-style unit (`ConvBn::forward`): conv, the temporal module if it hosts one, BN,
/// ReLU.
pub fn unit(g: &mut Graph, u: &ConvBn, x: &Value) -> Result<Value> {
    let y = conv(g, &u.conv, x)?;
    let Some(t) = &u.temporal else {
        let y = batch_norm(g, &u.bn, &y);
        return Ok(g.clamp(&y, f32::INFINITY));
    };
    let y = temporal::forward(g, t, &y)?;
    // The BN and ReLU after a module in its scope: gateshift runs them in the module's unit.
    Ok(g.scoped(t.spec().name, |g| {
        let y = batch_norm(g, &u.bn, &y);
        g.clamp(&y, f32::INFINITY)
    }))
}

/// Units applied one after the other.
pub fn chain(g: &mut Graph, units: &[&ConvBn], x: &Value) -> Result<Value> {
    units.iter().try_fold(x.clone(), |x, u| unit(g, u, &x))
}
