//! ResNets (`model/backbone/resnet.rs`) as ONNX nodes, with each block's temporal module where
//! `Block::forward` puts it.

use anyhow::{Result, bail};

use crate::export::graph::{Graph, Value};
use crate::export::layers::{batch_norm, conv, conv_bn_clamp, max_pool};
use crate::export::temporal;
use crate::model::backbone::resnet::{Block, ResNet};
use crate::model::batch_norm::BatchNorm;
use crate::model::temporal::{Place, Temporal};

/// The maps before global pooling.
pub fn forward(g: &mut Graph, m: &ResNet, x: &Value) -> Result<Value> {
    let x = conv_bn_clamp(g, &m.conv1, &m.bn1, x, f32::INFINITY)?;
    let mut x = max_pool(g, &m.maxpool, &x)?;
    for b in m.layer1.iter().chain(&m.layer2).chain(&m.layer3).chain(&m.layer4) {
        x = block(g, b, &x)?;
    }
    Ok(x)
}

/// ReLU(BN(conv(x))) with the module between the conv and its BN.
fn unit_with(g: &mut Graph, t: &Temporal, c: &burn::nn::conv::Conv2d, bn: &BatchNorm, x: &Value) -> Result<Value> {
    if let Temporal::Gst(_) = t {
        bail!("ONNX export of GST is not implemented (TSN, TSM, GSM and GSF export)");
    }
    let y = conv(g, c, x)?;
    let y = temporal::forward(g, t, &y)?;
    let y = batch_norm(g, bn, &y);
    Ok(g.clamp(&y, f32::INFINITY))
}

fn block(g: &mut Graph, b: &Block, x: &Value) -> Result<Value> {
    let place = b.temporal.as_ref().map(|t| t.spec().place);
    let unit = b.unit_of_temporal();
    let relu = f32::INFINITY;
    let x = match (&b.temporal, place) {
        (Some(t), Some(Place::Shift)) if b.shift_block => temporal::forward(g, t, x)?,
        _ => x.clone(),
    };
    let y = match (&b.temporal, place) {
        // The residual shift: the shifted map feeds `conv1` alone.
        (Some(t), Some(Place::Shift)) if !b.shift_block => {
            let shifted = temporal::forward(g, t, &x)?;
            conv_bn_clamp(g, &b.conv1, &b.bn1, &shifted, relu)?
        }
        (Some(t), _) if unit == Some(1) => unit_with(g, t, &b.conv1, &b.bn1, &x)?,
        _ => conv_bn_clamp(g, &b.conv1, &b.bn1, &x, relu)?,
    };
    let (last_conv, last_bn, y) = match (&b.conv3, &b.bn3, &b.temporal) {
        (Some(conv3), Some(bn3), Some(t)) if unit == Some(2) => (conv3, bn3, unit_with(g, t, &b.conv2, &b.bn2, &y)?),
        (Some(conv3), Some(bn3), _) => (conv3, bn3, conv_bn_clamp(g, &b.conv2, &b.bn2, &y, relu)?),
        _ => (&b.conv2, &b.bn2, y),
    };
    let identity = match &b.downsample {
        Some(d) => {
            let y = conv(g, &d.conv, &x)?;
            batch_norm(g, &d.bn, &y)
        }
        None => x,
    };
    let mut y = conv(g, last_conv, &y)?;
    if let (Some(t), Some(Place::AfterLastConv)) = (&b.temporal, place) {
        y = temporal::forward(g, t, &y)?;
    }
    let y = batch_norm(g, last_bn, &y);
    let y = g.binary("Add", &y, &identity);
    Ok(g.clamp(&y, relu))
}
