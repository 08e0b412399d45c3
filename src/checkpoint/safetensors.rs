//! safetensors files: gateshift's own checkpoint format and the fixtures' tensor format.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, TensorData};
use safetensors::tensor::{Dtype, TensorView};

/// Reads every tensor of a safetensors file, plus its metadata (regular files only).
pub fn read(path: &Path) -> Result<(BTreeMap<String, TensorData>, BTreeMap<String, String>)> {
    let bytes = crate::io::read_regular(path, "safetensors file")?;
    parse(&bytes).with_context(|| format!("{}: not a valid safetensors file", path.display()))
}

/// Whether `head` (the first bytes of a file of `file_len` bytes, at least the header's) is
/// a safetensors header: a little-endian length that fits the file, then a JSON object of
/// that length. Decided by validating, not by a magic byte: the length's first byte can be
/// anything, 0x80 (pickle's) and `P` (ZIP's) included.
pub fn is_header(head: &[u8], file_len: u64) -> bool {
    let Some(n) = header_len(head, file_len) else { return false };
    let Some(json) = head.get(8..8 + n) else { return false };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json).is_ok()
}

/// The longest header the safetensors crate reads (its own limit).
pub const MAX_HEADER: u64 = 100_000_000;

/// The header length a safetensors file of `file_len` bytes starting with `head` declares,
/// if it fits the file and safetensors' own limit.
pub fn header_len(head: &[u8], file_len: u64) -> Option<usize> {
    let n = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    ((2..=MAX_HEADER).contains(&n) && n <= file_len.saturating_sub(8)).then_some(n as usize)
}

/// Parses a whole safetensors file held in memory; every tensor's offsets must lie within it.
pub fn parse(bytes: &[u8]) -> Result<(BTreeMap<String, TensorData>, BTreeMap<String, String>)> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let td = match view.dtype() {
            Dtype::F32 => TensorData::new(le_vec(data, f32::from_le_bytes), shape),
            Dtype::F64 => TensorData::new(le_vec(data, f64::from_le_bytes), shape).convert::<f32>(),
            Dtype::I64 => TensorData::new(le_vec(data, i64::from_le_bytes), shape),
            Dtype::I32 => TensorData::new(le_vec(data, i32::from_le_bytes), shape),
            Dtype::F16 => TensorData::new(le_vec(data, |b: [u8; 2]| half::f16::from_le_bytes(b).to_f32()), shape),
            Dtype::BF16 => TensorData::new(le_vec(data, |b: [u8; 2]| half::bf16::from_le_bytes(b).to_f32()), shape),
            other => bail!("tensor {name} has unsupported dtype {other:?}"),
        };
        out.insert(name, td);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default().into_iter().collect()))
}

fn le_vec<T, const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
}

/// Writes tensors (f32/i64/i32 data) and metadata to `path` atomically.
pub fn write(path: &Path, tensors: &BTreeMap<String, TensorData>, metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, data) in tensors {
        let dtype = match data.dtype() {
            DType::F32 => Dtype::F32,
            DType::I64 => Dtype::I64,
            DType::I32 => Dtype::I32,
            other => bail!("cannot write tensor {name} of dtype {other:?}"),
        };
        let view =
            TensorView::new(dtype, data.shape().to_vec(), data.as_bytes()).with_context(|| format!("tensor {name}"))?;
        views.push((name.clone(), view));
    }
    let meta: std::collections::HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta)).context("serialising safetensors")?;
    crate::io::write_atomic(path, &bytes)
}
