//! Writes `.pth` files laid out as `torch.save` writes them (a ZIP with `archive/data.pkl`, a
//! protocol-2 pickle of `_rebuild_tensor_v2` calls, and one `archive/data/K` entry per
//! storage), with any shapes, strides and declared sizes — including ones that lie — so the
//! reader's bounds can be tested without PyTorch.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// One float32 tensor: key, storage key, declared storage elements, offset, shape, stride.
pub struct Spec<'a> {
    pub key: &'a str,
    pub storage: &'a str,
    pub numel: u32,
    pub offset: u32,
    pub shape: &'a [u32],
    pub stride: &'a [u32],
}

fn text(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn int(p: &mut Vec<u8>, v: u32) {
    p.push(b'J');
    p.extend_from_slice(&(v as i32).to_le_bytes());
}

fn tuple(p: &mut Vec<u8>, items: &[u32]) {
    p.push(b'(');
    for &v in items {
        int(p, v);
    }
    p.push(b't');
}

/// The pickle of a dict of tensors, optionally nested under `top` (`state_dict`, …).
pub fn pickle(tensors: &[Spec], top: Option<&str>) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    if let Some(top) = top {
        p.push(b'}');
        text(&mut p, top);
    }
    p.extend_from_slice(b"}(");
    for t in tensors {
        text(&mut p, t.key);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        text(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        text(&mut p, t.storage);
        text(&mut p, "cpu");
        int(&mut p, t.numel);
        p.extend_from_slice(b"tQ");
        int(&mut p, t.offset);
        tuple(&mut p, t.shape);
        tuple(&mut p, t.stride);
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)Rt");
        p.push(b'R');
    }
    p.push(b'u');
    if top.is_some() {
        p.push(b's');
    }
    p.push(b'.');
    p
}

/// Writes the archive: the pickle, then `storages` as (key, bytes), each stored or deflated.
pub fn write(path: &Path, pickle: &[u8], storages: &[(&str, Vec<u8>)], deflate: bool) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", options).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file("archive/version", options).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// A well-formed file: each tensor its own contiguous storage of `values`.
pub fn plain(path: &Path, tensors: &[(&str, &[u32], Vec<f32>)], top: Option<&str>) {
    let keys: Vec<String> = (0..tensors.len()).map(|i| i.to_string()).collect();
    let strides: Vec<Vec<u32>> = tensors.iter().map(|(_, shape, _)| contiguous(shape)).collect();
    let specs: Vec<Spec> = tensors
        .iter()
        .zip(&keys)
        .zip(&strides)
        .map(|(((key, shape, values), k), stride)| Spec {
            key,
            storage: k,
            numel: values.len() as u32,
            offset: 0,
            shape,
            stride,
        })
        .collect();
    let storages: Vec<(&str, Vec<u8>)> = tensors
        .iter()
        .zip(&keys)
        .map(|((_, _, v), k)| (k.as_str(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    write(path, &pickle(&specs, top), &storages, false);
}

fn contiguous(shape: &[u32]) -> Vec<u32> {
    let mut stride = vec![1u32; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    stride
}
