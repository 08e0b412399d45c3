//! InceptionV3 of the official GSM code (`model/backbone/inceptionv3.rs`) as ONNX nodes.

use anyhow::Result;

use crate::export::graph::{Graph, Value};
use crate::export::layers::{avg_pool, max_pool};
use crate::export::units::{chain, unit};
use crate::model::backbone::InceptionV3;
use crate::model::backbone::inceptionv3::{
    BlockA, BlockB, BlockC, BlockD, BlockE, avg_pool_3x3_layer, max_pool_3x3_layer,
};

/// The maps before global pooling.
pub fn forward(g: &mut Graph, m: &InceptionV3, x: &Value) -> Result<Value> {
    let x = chain(g, &[&m.conv, &m.conv_1, &m.conv_2], x)?;
    let x = max_pool(g, &max_pool_3x3_layer(2), &x)?;
    let x = chain(g, &[&m.conv_3, &m.conv_4], &x)?;
    let mut x = max_pool(g, &max_pool_3x3_layer(2), &x)?;
    for b in [&m.mixed, &m.mixed_1, &m.mixed_2] {
        x = block_a(g, b, &x)?;
    }
    x = block_b(g, &m.mixed_3, &x)?;
    for b in [&m.mixed_4, &m.mixed_5, &m.mixed_6, &m.mixed_7] {
        x = block_c(g, b, &x)?;
    }
    x = block_d(g, &m.mixed_8, &x)?;
    for b in [&m.mixed_9, &m.mixed_10] {
        x = block_e(g, b, &x)?;
    }
    Ok(x)
}

fn block_a(g: &mut Graph, b: &BlockA, x: &Value) -> Result<Value> {
    let a = unit(g, &b.conv, x)?;
    let t = chain(g, &[&b.tower_conv, &b.tower_conv_1], x)?;
    let t1 = chain(g, &[&b.tower_1_conv, &b.tower_1_conv_1, &b.tower_1_conv_2], x)?;
    let pooled = avg_pool(g, &avg_pool_3x3_layer(), x)?;
    let d = unit(g, &b.tower_2_conv, &pooled)?;
    Ok(g.concat(&[a, t, t1, d], 1))
}

fn block_b(g: &mut Graph, b: &BlockB, x: &Value) -> Result<Value> {
    let a = unit(g, &b.conv, x)?;
    let t = chain(g, &[&b.tower_conv, &b.tower_conv_1, &b.tower_conv_2], x)?;
    let p = max_pool(g, &max_pool_3x3_layer(2), x)?;
    Ok(g.concat(&[a, t, p], 1))
}

fn block_c(g: &mut Graph, b: &BlockC, x: &Value) -> Result<Value> {
    let a = unit(g, &b.conv, x)?;
    let t = chain(g, &[&b.tower_conv, &b.tower_conv_1, &b.tower_conv_2], x)?;
    let t1 =
        chain(g, &[&b.tower_1_conv, &b.tower_1_conv_1, &b.tower_1_conv_2, &b.tower_1_conv_3, &b.tower_1_conv_4], x)?;
    let pooled = avg_pool(g, &avg_pool_3x3_layer(), x)?;
    let d = unit(g, &b.tower_2_conv, &pooled)?;
    Ok(g.concat(&[a, t, t1, d], 1))
}

fn block_d(g: &mut Graph, b: &BlockD, x: &Value) -> Result<Value> {
    let a = chain(g, &[&b.tower_conv, &b.tower_conv_1], x)?;
    let t = chain(g, &[&b.tower_1_conv, &b.tower_1_conv_1, &b.tower_1_conv_2, &b.tower_1_conv_3], x)?;
    let p = max_pool(g, &max_pool_3x3_layer(2), x)?;
    Ok(g.concat(&[a, t, p], 1))
}

fn block_e(g: &mut Graph, b: &BlockE, x: &Value) -> Result<Value> {
    let a = unit(g, &b.conv, x)?;
    let t = unit(g, &b.tower_conv, x)?;
    let (b1, b2) = (unit(g, &b.tower_mixed_conv, &t)?, unit(g, &b.tower_mixed_conv_1, &t)?);
    let t1 = chain(g, &[&b.tower_1_conv, &b.tower_1_conv_1], x)?;
    let (c1, c2) = (unit(g, &b.tower_1_mixed_conv, &t1)?, unit(g, &b.tower_1_mixed_conv_1, &t1)?);
    let pooled =
        if b.max_pool { max_pool(g, &max_pool_3x3_layer(1), x)? } else { avg_pool(g, &avg_pool_3x3_layer(), x)? };
    let d = unit(g, &b.tower_2_conv, &pooled)?;
    Ok(g.concat(&[a, b1, b2, c1, c2, d], 1))
}
