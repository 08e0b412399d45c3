//! BN-Inception (`model/backbone/bninception.rs`) as ONNX nodes.

use anyhow::Result;

use crate::export::graph::{Graph, Value};
use crate::export::layers::{avg_pool, max_pool};
use crate::export::units::{chain, unit};
use crate::model::backbone::BnInception;
use crate::model::backbone::bninception::Mixed;
use crate::model::layers::ConvBn;

/// The maps before global pooling.
pub fn forward(g: &mut Graph, m: &BnInception, x: &Value) -> Result<Value> {
    let x = unit(g, &m.conv1_7x7_s2, x)?;
    let x = max_pool(g, &m.pool_s2, &x)?;
    let x = chain(g, &[&m.conv2_3x3_reduce, &m.conv2_3x3], &x)?;
    let x = max_pool(g, &m.pool_s2, &x)?;
    let x = mixed(g, m, &x, m.block_3a())?;
    let x = mixed(g, m, &x, m.block_3b())?;
    let x = reduction(
        g,
        m,
        &x,
        [&m.inception_3c_3x3_reduce, &m.inception_3c_3x3],
        [&m.inception_3c_double_3x3_reduce, &m.inception_3c_double_3x3_1, &m.inception_3c_double_3x3_2],
    )?;
    let mut x = x;
    for i in 0..4 {
        x = mixed(g, m, &x, m.block_4(i))?;
    }
    let x = reduction(
        g,
        m,
        &x,
        [&m.inception_4e_3x3_reduce, &m.inception_4e_3x3],
        [&m.inception_4e_double_3x3_reduce, &m.inception_4e_double_3x3_1, &m.inception_4e_double_3x3_2],
    )?;
    let x = mixed(g, m, &x, m.block_5(false))?;
    mixed(g, m, &x, m.block_5(true))
}

fn mixed(g: &mut Graph, m: &BnInception, x: &Value, b: Mixed<'_>) -> Result<Value> {
    let a = unit(g, b.b1x1, x)?;
    let c3 = chain(g, &b.b3x3, x)?;
    let d3 = chain(g, &b.double, x)?;
    let pooled = if b.max_pool { max_pool(g, &m.pool_max, x)? } else { avg_pool(g, &m.pool_avg, x)? };
    let p = unit(g, b.pool_proj, &pooled)?;
    Ok(g.concat(&[a, c3, d3, p], 1))
}

fn reduction(g: &mut Graph, m: &BnInception, x: &Value, b3x3: [&ConvBn; 2], double: [&ConvBn; 3]) -> Result<Value> {
    let a = chain(g, &b3x3, x)?;
    let b = chain(g, &double, x)?;
    let c = max_pool(g, &m.pool_s2, x)?;
    Ok(g.concat(&[a, b, c], 1))
}
