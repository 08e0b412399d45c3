//! EfficientNet-Lite (`model/backbone/efficientnet.rs`) as ONNX nodes: TensorFlow's SAME
//! padding written into each convolution's `pads`.

use anyhow::Result;

use crate::export::graph::{Graph, Value};
use crate::export::layers::{batch_norm, conv_padded};
use crate::export::temporal;
use crate::model::backbone::EfficientNet;
use crate::model::backbone::efficientnet::{MbBlock, SameConv};
use crate::model::batch_norm::BatchNorm;

/// The maps before global pooling.
pub fn forward(g: &mut Graph, m: &EfficientNet, x: &Value) -> Result<Value> {
    let mut x = conv_bn_relu6(g, &m.conv_stem, &m.bn0, x);
    for b in &m.blocks {
        x = block(g, b, &x)?;
    }
    Ok(conv_bn_relu6(g, &m.conv_head, &m.bn1, &x))
}

fn same(g: &mut Graph, c: &SameConv, x: &Value) -> Value {
    let [top, bottom, left, right] = c.padding_of(x.dim(2), x.dim(3));
    conv_padded(g, &c.conv, x, [top, left, bottom, right])
}

fn conv_bn_relu6(g: &mut Graph, c: &SameConv, bn: &BatchNorm, x: &Value) -> Value {
    let y = same(g, c, x);
    let y = batch_norm(g, bn, &y);
    g.clamp(&y, 6.0)
}

fn block(g: &mut Graph, b: &MbBlock, x: &Value) -> Result<Value> {
    let mut y = x.clone();
    if let (Some(c), Some(bn)) = (&b.expand_conv, &b.bn0) {
        y = match &b.temporal {
            Some(t) => {
                let z = same(g, c, &y);
                let z = temporal::forward(g, t, &z)?;
                let z = batch_norm(g, bn, &z);
                g.clamp(&z, 6.0)
            }
            None => conv_bn_relu6(g, c, bn, &y),
        };
    }
    let y = conv_bn_relu6(g, &b.depthwise_conv, &b.bn1, &y);
    let y = same(g, &b.project_conv, &y);
    let y = batch_norm(g, &b.bn2, &y);
    Ok(if b.residual { g.binary("Add", &y, x) } else { y })
}
