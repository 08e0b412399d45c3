//! The backbones as ONNX graphs, one file per architecture, each read beside its model file:
//! the same units in the same order (`model/backbone/*.rs`).

mod bninception;
mod efficientnet;
mod inceptionv3;
mod resnet;

use anyhow::Result;

use super::graph::{Graph, Value};
use super::layers::global_mean;
use crate::model::backbone::Backbone;

/// `(N, C, H, W)` frames → `(N, F, 1, 1)` globally pooled features.
pub fn forward(g: &mut Graph, backbone: &Backbone, x: &Value) -> Result<Value> {
    let maps = match backbone {
        Backbone::BnInception(m) => bninception::forward(g, m, x)?,
        Backbone::InceptionV3(m) => inceptionv3::forward(g, m, x)?,
        Backbone::ResNet(m) => resnet::forward(g, m, x)?,
        Backbone::EfficientNet(m) => efficientnet::forward(g, m, x)?,
    };
    Ok(global_mean(g, &maps))
}
