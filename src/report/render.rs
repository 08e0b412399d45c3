//! A result video (`predict --render`, `stream --render`): the input's frames with the top
//! classes and their probabilities drawn in a corner, and along the bottom a strip of the top
//! class over time (one colour per class, the current frame marked), encoded by ffmpeg
//! (H.264 where ffmpeg has libx264, MPEG-4 part 2 otherwise).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use image::RgbImage;
use plotters::prelude::*;

use crate::data::FrameNaming;
use crate::data::rawframes::read_rgb;
use crate::data::transform::resize_short;
use crate::data::video;

/// Frames are drawn with their short side at most this (a 4K phone video renders at 480p).
pub const MAX_SHORT_SIDE: u32 = 480;

/// The frames a result video is drawn on.
pub enum Frames<'a> {
    Video(&'a Path),
    Folder { dir: &'a Path, naming: &'a FrameNaming, count: usize },
}

/// What is drawn on frame `i`: the ranked `(label, probability)` lines and the top class of
/// every frame (`None`: not scored yet).
pub struct Labels<'a> {
    pub at: &'a dyn Fn(usize) -> Vec<(String, f32)>,
    pub timeline: &'a [Option<usize>],
}

/// Draws `labels` on every frame of `frames` and encodes the result at `fps` to `out`. ffmpeg
/// writes a temporary file; its bytes then go to `out` as every output does
/// (`io::write_atomic`: a regular file or a symlink's target replaced atomically, a FIFO or
/// device written through). Returns the frames written and their size.
pub fn render(frames: Frames, labels: &Labels, fps: f64, out: &Path) -> Result<(usize, (u32, u32))> {
    super::plot::ensure_font()?;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("mp4").to_string();
    let tmp = tempfile::Builder::new().prefix(".gateshift-render.").suffix(&format!(".{ext}")).tempfile()?;
    let mut encoder: Option<Encoder> = None;
    let mut count = 0;
    let mut draw = |i: usize, img: RgbImage| -> Result<()> {
        let img = fit(img);
        let enc = match &mut encoder {
            Some(e) => e,
            None => encoder.insert(Encoder::start(img.dimensions(), fps, tmp.path())?),
        };
        if img.dimensions() != enc.size {
            bail!("frame {i} is {:?}, the first was {:?}", img.dimensions(), enc.size);
        }
        enc.write(&overlay(img, i, labels)?)?;
        count += 1;
        Ok(())
    };
    match frames {
        Frames::Video(path) => {
            let info = video::probe_cached(path)?;
            video::for_each_frame(path, &info, None, &mut draw)?;
        }
        Frames::Folder { dir, naming, count: n } => {
            for i in 0..n {
                draw(i, read_rgb(&naming.path(dir, 0, i))?)?;
            }
        }
    }
    let enc = encoder.ok_or_else(|| anyhow::anyhow!("no frame to render"))?;
    let size = enc.size;
    enc.finish()?;
    let bytes = std::fs::read(tmp.path()).context("reading the encoded video back")?;
    crate::io::write_atomic(out, &bytes)?;
    Ok((count, size))
}

/// `img` with its short side at most [`MAX_SHORT_SIDE`] and even sides (H.264 in 4:2:0).
fn fit(img: RgbImage) -> RgbImage {
    let img = if img.width().min(img.height()) > MAX_SHORT_SIDE { resize_short(&img, MAX_SHORT_SIDE) } else { img };
    let (w, h) = (img.width() & !1, img.height() & !1);
    if (w, h) == img.dimensions() { img } else { image::imageops::crop_imm(&img, 0, 0, w, h).to_image() }
}

/// A colour per class for the strip.
fn colour(class: usize) -> RGBColor {
    let c = Palette99::pick(class).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// Frame `i` with its labels in the top-left corner and the timeline strip at the bottom.
fn overlay(mut img: RgbImage, i: usize, labels: &Labels) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let px = (h / 22).clamp(10, 28);
    let lines = (labels.at)(i);
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing frame {i}: {e}");
        let font = ("sans-serif", px as f64).into_font().color(&WHITE);
        let box_h = (lines.len() as u32 * (px + 4) + 6) as i32;
        let box_w = (w as i32 - 8).min(px as i32 * 16);
        if !lines.is_empty() {
            root.draw(&Rectangle::new([(4, 4), (4 + box_w, 4 + box_h)], BLACK.mix(0.55).filled())).map_err(err)?;
        }
        for (k, (label, p)) in lines.iter().enumerate() {
            let text = format!("{:5.1}%  {label}", 100.0 * p);
            root.draw_text(&text, &font, (10, 8 + k as i32 * (px as i32 + 4))).map_err(err)?;
        }
        let (n, strip) = (labels.timeline.len().max(1), (h / 24).max(6) as i32);
        let top = h as i32 - strip;
        for (f, class) in labels.timeline.iter().enumerate() {
            let (x0, x1) = ((f * w as usize / n) as i32, ((f + 1) * w as usize / n) as i32);
            let fill = class.map_or(BLACK.mix(0.4).filled(), |c| colour(c).filled());
            root.draw(&Rectangle::new([(x0, top), (x1.max(x0 + 1), h as i32)], fill)).map_err(err)?;
        }
        let x = ((2 * i + 1) * w as usize / (2 * n)) as i32;
        root.draw(&Rectangle::new([(x - 1, top - 4), (x + 1, h as i32)], WHITE.filled())).map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(img)
}

/// ffmpeg reading raw RGB frames on its standard input.
pub(crate) struct Encoder {
    child: std::process::Child,
    size: (u32, u32),
}

impl Encoder {
    /// ffmpeg encoding raw RGB frames of `size` at `fps` into the file `out`.
    pub(crate) fn start(size: (u32, u32), fps: f64, out: &Path) -> Result<Self> {
        let codec = if has_libx264() { "libx264" } else { "mpeg4" };
        let mut cmd = crate::data::ffmpeg::tool("ffmpeg");
        cmd.args(["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
            .arg(format!("{}x{}", size.0, size.1))
            .arg("-r")
            .arg(format!("{fps:.6}"))
            .args(["-i", "-", "-an", "-c:v", codec, "-pix_fmt", "yuv420p"]);
        if codec == "mpeg4" {
            cmd.args(["-q:v", "3"]);
        }
        cmd.arg(out).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = crate::data::ffmpeg::spawn(&mut cmd, "ffmpeg")?;
        Ok(Self { child, size })
    }

    pub(crate) fn write(&mut self, img: &RgbImage) -> Result<()> {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        if let Err(e) = stdin.write_all(img.as_raw()) {
            drop(self.child.stdin.take());
            let _ = self.child.wait();
            let mut said = String::new();
            if let Some(s) = self.child.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(s, &mut said);
            }
            bail!("ffmpeg stopped encoding ({e}): {}", said.trim());
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().context("waiting for ffmpeg")?;
        if !out.status.success() {
            bail!("ffmpeg could not encode the video: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

/// Whether this ffmpeg has the libx264 encoder (asked once).
fn has_libx264() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let out = crate::data::ffmpeg::tool("ffmpeg").args(["-hide_banner", "-encoders"]).output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" libx264 "))
    })
}
