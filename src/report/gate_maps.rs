//! GSM's gate maps drawn over the frames they gate (`gateshift explain`): each layer's tanh
//! gates, upsampled to the frame, tint it red where the gate is positive and blue where it is
//! negative, the stronger the larger |g|. A PNG grid (frames across, layers down) per channel
//! half, an mp4 strip going through the frames, and the routed share by layer and class.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Result, bail};
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::model::InputSpec;
use crate::report::routing::Layer;

/// The side a grid cell is drawn at: small inputs are scaled up to the first, large ones down
/// to the second.
const MIN_CELL: u32 = 96;
const MAX_CELL: u32 = 128;
/// Room for a row's label on the left of a grid.
const LABEL_W: u32 = 190;

/// The frames of a recognizer input `(T·3, S, S)` (one view), as the pixels they were made
/// from: the inverse of the backbone's normalisation (`data::transform`).
pub fn frames(data: &[f32], t: usize, size: usize, spec: &InputSpec) -> Vec<RgbImage> {
    let plane = size * size;
    (0..t)
        .map(|f| {
            let mut img = RgbImage::new(size as u32, size as u32);
            for (i, px) in img.pixels_mut().enumerate() {
                for c in 0..3 {
                    let stored = if spec.bgr { 2 - c } else { c };
                    let v = data[(f * 3 + stored) * plane + i];
                    px.0[c] = ((v * spec.std[stored] + spec.mean[stored]) * 255.0 / spec.range)
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
            }
            img
        })
        .collect()
}

/// `frame` scaled to `cell`² with the gate map `gate` `(h, w)` blended over it.
fn overlay(frame: &RgbImage, gate: &[f32], (h, w): (usize, usize), cell: u32) -> RgbImage {
    let base = image::imageops::resize(frame, cell, cell, image::imageops::FilterType::Triangle);
    RgbImage::from_fn(cell, cell, |x, y| {
        let g = bilinear(
            gate,
            (h, w),
            (y as f32 + 0.5) * h as f32 / cell as f32,
            (x as f32 + 0.5) * w as f32 / cell as f32,
        );
        let tint = if g >= 0.0 { [255.0, 40.0, 0.0] } else { [0.0, 90.0, 255.0] };
        let a = 0.8 * g.abs().min(1.0);
        let p = base.get_pixel(x, y).0;
        Rgb([0, 1, 2].map(|c| ((1.0 - a) * p[c] as f32 + a * tint[c]).round() as u8))
    })
}

/// The map `(h, w)` at pixel-centre coordinates `(y, x)` (in map cells), clamped at the edges.
fn bilinear(map: &[f32], (h, w): (usize, usize), y: f32, x: f32) -> f32 {
    let (y, x) = ((y - 0.5).clamp(0.0, (h - 1) as f32), (x - 0.5).clamp(0.0, (w - 1) as f32));
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let at = |yy: usize, xx: usize| map[yy * w + xx];
    (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1.0 - fx) * at(y1, x0) + fx * at(y1, x1))
}

/// One half's gates of frame `f` in `layer`.
fn gate_of(layer: &Layer, half: usize, f: usize) -> &[f32] {
    let hw = layer.height * layer.width;
    &layer.gate[(half * layer.frames + f) * hw..][..hw]
}

fn cell_side(frames: &[RgbImage]) -> u32 {
    frames.first().map_or(MIN_CELL, |f| f.width().clamp(MIN_CELL, MAX_CELL))
}

/// The grid of one half: the frames across the top, then a row per layer.
pub fn grid(frames: &[RgbImage], layers: &[Layer], half: usize, path: &Path) -> Result<()> {
    let cell = cell_side(frames);
    let (cols, rows) = (frames.len() as u32, layers.len() as u32 + 1);
    let mut img = RgbImage::from_pixel(LABEL_W + cols * (cell + 2), rows * (cell + 2), Rgb([255, 255, 255]));
    let mut labels = vec![format!("input ({} frames)", frames.len())];
    for (f, frame) in frames.iter().enumerate() {
        let scaled = image::imageops::resize(frame, cell, cell, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut img, &scaled, (LABEL_W + f as u32 * (cell + 2)) as i64, 0);
    }
    for (r, layer) in layers.iter().enumerate() {
        for (f, frame) in frames.iter().enumerate().take(layer.frames) {
            let cell_img = overlay(frame, gate_of(layer, half, f), (layer.height, layer.width), cell);
            let at = ((LABEL_W + f as u32 * (cell + 2)) as i64, ((r as u32 + 1) * (cell + 2)) as i64);
            image::imageops::replace(&mut img, &cell_img, at.0, at.1);
        }
        labels.push(format!(
            "{} {} · {}×{} · routed {:.1}%",
            layer.module,
            layer.index,
            layer.height,
            layer.width,
            100.0 * layer.halves[half].routed
        ));
    }
    draw_labels(&mut img, &labels, cell + 2)?;
    write_png(&img, path)
}

/// Row labels in the left margin.
fn draw_labels(img: &mut RgbImage, labels: &[String], row: u32) -> Result<()> {
    super::plot::ensure_font()?;
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let font = ("sans-serif", 13.0).into_font().color(&BLACK);
    for (i, text) in labels.iter().enumerate() {
        let y = (i as u32 * row + row / 2) as i32 - 7;
        root.draw_text(text, &font, (4, y)).map_err(|e| anyhow::anyhow!("drawing labels: {e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("drawing labels: {e}"))?;
    Ok(())
}

fn write_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::io::write_atomic(path, &bytes)
}

/// A video going through the frames: at each, the frame and every layer's two gate maps
/// (half 1 above, half 2 below), at 2 frames per second.
pub fn strip(frames: &[RgbImage], layers: &[Layer], path: &Path) -> Result<()> {
    let cell = cell_side(frames) & !1;
    let (w, h) = ((layers.len() as u32 + 1) * cell, 2 * cell);
    // ffmpeg writes a temporary file; its bytes then go to `path` as every output does.
    let tmp = tempfile::Builder::new().prefix(".gateshift-gates.").suffix(".mp4").tempfile()?;
    let mut video = super::render::Encoder::start((w, h), 2.0, tmp.path())?;
    for (f, frame) in frames.iter().enumerate() {
        let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        let scaled = image::imageops::resize(frame, cell, cell, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut img, &scaled, 0, (cell / 2) as i64);
        for (l, layer) in layers.iter().enumerate() {
            for half in 0..2 {
                let g =
                    overlay(frame, gate_of(layer, half, f.min(layer.frames - 1)), (layer.height, layer.width), cell);
                image::imageops::replace(&mut img, &g, ((l as u32 + 1) * cell) as i64, (half as u32 * cell) as i64);
            }
        }
        video.write(&img)?;
    }
    video.finish()?;
    crate::io::write_atomic(path, &std::fs::read(tmp.path())?)
}

/// The routed share by layer, one line per class: half 1 on the left, half 2 on the right
/// (`halves`: where each comes from). `rows`: (class name, per layer [half 1, half 2]).
pub fn routing_by_class(rows: &[(String, Vec<[f64; 2]>)], halves: [&str; 2], path: &Path) -> Result<()> {
    let layers = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    if layers == 0 {
        bail!("no gated layer to plot");
    }
    let top = rows.iter().flat_map(|(_, v)| v.iter().flatten().copied()).fold(0.0f64, f64::max).max(1e-3) * 1.05;
    super::plot::atomic_png(path, 1200, 520, |root| {
        let panels = root.split_evenly((1, 2));
        for (half, panel) in panels.iter().enumerate() {
            let title = format!("half {}: routed {}", half + 1, halves[half]);
            let mut chart = ChartBuilder::on(panel)
                .caption(&title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..(layers - 1).max(1) as f64, 0f64..top)
                .map_err(super::plot::err)?;
            chart.configure_mesh().x_desc("gated layer").y_desc("Σ|g·x| / Σ|x|").draw().map_err(super::plot::err)?;
            for (i, (name, v)) in rows.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                let points = v.iter().enumerate().map(|(l, r)| (l as f64, r[half]));
                chart
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                    .map_err(super::plot::err)?
                    .label(name.clone())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
            }
            let mut labels = chart.configure_series_labels();
            labels.background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(super::plot::err)?;
        }
        Ok(())
    })
}
