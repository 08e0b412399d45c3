//! Rawframe folders: one JPEG (or PNG) per frame, named by a Python-style template such as
//! `img_{:05d}.jpg`, numbered from a configurable first index (1 in the official code).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::RgbImage;

use crate::limits;

/// A frame file-name template: `prefix{}suffix`, `prefix{:d}suffix` or `prefix{:0Nd}suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    prefix: String,
    width: usize,
    suffix: String,
}

impl Template {
    pub fn parse(s: &str) -> Result<Self> {
        let open = s.find('{').ok_or_else(|| anyhow::anyhow!("frame template {s:?} has no {{}} placeholder"))?;
        let close = s[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| anyhow::anyhow!("frame template {s:?}: unclosed {{"))?;
        let spec = &s[open + 1..close];
        let width = match spec {
            "" | ":d" => 0,
            _ => {
                let digits = spec.strip_prefix(":0").and_then(|r| r.strip_suffix('d'));
                match digits.and_then(|d| d.parse::<usize>().ok()) {
                    Some(w) if w <= 12 => w,
                    _ => bail!("frame template {s:?}: unsupported format {{{spec}}} (use {{}}, {{:d}} or {{:0Nd}})"),
                }
            }
        };
        let suffix = &s[close + 1..];
        if suffix.contains('{') || suffix.contains('/') || s[..open].contains('/') {
            bail!("frame template {s:?}: one placeholder, no folder separators");
        }
        Ok(Self { prefix: s[..open].to_string(), width, suffix: suffix.to_string() })
    }

    pub fn format(&self, index: usize) -> String {
        format!("{}{:0w$}{}", self.prefix, index, self.suffix, w = self.width)
    }

    /// The template as written: `img_{:05d}.jpg`.
    pub fn format_string(&self) -> String {
        match self.width {
            0 => format!("{}{{}}{}", self.prefix, self.suffix),
            w => format!("{}{{:0{w}d}}{}", self.prefix, self.suffix),
        }
    }

    /// The frame index a file name encodes, if it matches the template.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let digits = name.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if self.width > 0 && digits.len() < self.width {
            return None;
        }
        digits.parse().ok()
    }
}

/// How frames of a rawframe dataset are named on disk.
#[derive(Clone, Debug)]
pub struct FrameNaming {
    pub template: Template,
    /// Index of the first frame file (1 for the official code's `img_00001.jpg`).
    pub first_index: usize,
}

impl FrameNaming {
    pub fn new(template: &str, first_index: usize) -> Result<Self> {
        limits::at_most("--first-index", first_index, limits::MAX_LIST_FRAMES)?;
        Ok(Self { template: Template::parse(template)?, first_index })
    }

    /// The file of 0-based frame `frame` (after the list's `start` offset) in `dir`.
    pub fn path(&self, dir: &Path, start: usize, frame: usize) -> PathBuf {
        dir.join(self.template.format(self.first_index + start + frame))
    }

    /// Number of frames in `dir`: files matching the template, which must be contiguous from
    /// the first index.
    pub fn count(&self, dir: &Path) -> Result<usize> {
        let mut indices = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading frame folder {}", dir.display()))? {
            let e = e.with_context(|| format!("reading frame folder {}", dir.display()))?;
            if let Some(i) = e.file_name().to_str().and_then(|n| self.template.index_of(n)) {
                indices.push(i);
            }
        }
        indices.sort_unstable();
        for (k, &i) in indices.iter().enumerate() {
            if i != self.first_index + k {
                bail!("{}: frame {} is missing", dir.display(), self.template.format(self.first_index + k));
            }
        }
        Ok(indices.len())
    }
}

/// Decodes an image file to RGB; the error names the file. Only regular files are read,
/// and a header declaring more than [`limits::MAX_FRAME_PIXELS`] is refused before the
/// pixels are allocated.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = crate::io::read_regular(path, "frame")?;
    if bytes.is_empty() {
        bail!("frame {} is empty (0 bytes)", path.display());
    }
    decode_image(&bytes).with_context(|| format!("cannot decode frame {}", path.display()))
}

/// Decodes JPEG (libjpeg-turbo) or any format `image` reads (PNG, …) from memory, the
/// declared size checked first.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return decode_jpeg(bytes);
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut bounds = image::Limits::default();
    bounds.max_alloc = Some(4 * limits::MAX_FRAME_PIXELS);
    reader.limits(bounds.clone());
    let (w, h) = reader.into_dimensions()?;
    limits::frame_pixels("the image", w as u64, h as u64)?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(bounds);
    Ok(reader.decode()?.into_rgb8())
}

/// JPEG through libjpeg-turbo (SIMD; the library PIL uses, with the same default IDCT and
/// upsampling). A corrupt or truncated stream is an error, not a partly grey frame.
fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage> {
    thread_local! {
        static DECODER: std::cell::RefCell<Option<turbojpeg::Decompressor>> = const { std::cell::RefCell::new(None) };
    }
    DECODER.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(turbojpeg::Decompressor::new()?);
        }
        let d = d.as_mut().expect("decoder just created");
        let header = d.read_header(bytes)?;
        let (w, h) = (header.width, header.height);
        limits::frame_pixels("the JPEG header", w as u64, h as u64)?;
        let mut pixels = vec![0u8; 3 * w * h];
        let image = turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: w,
            pitch: 3 * w,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        d.decompress(bytes, image)?;
        RgbImage::from_raw(w as u32, h as u32, pixels).ok_or_else(|| anyhow::anyhow!("decoded size mismatch"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_format_like_python() {
        assert_eq!(Template::parse("img_{:05d}.jpg").unwrap().format(7), "img_00007.jpg");
        assert_eq!(Template::parse("{:06d}.jpg").unwrap().format(123), "000123.jpg");
        assert_eq!(Template::parse("frames{:05d}.jpg").unwrap().format(1), "frames00001.jpg");
        assert_eq!(Template::parse("{}.png").unwrap().format(42), "42.png");
        assert!(Template::parse("img.jpg").is_err());
        assert!(Template::parse("{:5x}.jpg").is_err());
        let t = Template::parse("img_{:05d}.jpg").unwrap();
        assert_eq!(t.index_of("img_00012.jpg"), Some(12));
        assert_eq!(t.index_of("img_12.jpg"), None);
        assert_eq!(t.index_of("img_0001a.jpg"), None);
    }

    #[test]
    fn frame_paths_apply_first_index_and_offset() {
        let n = FrameNaming::new("img_{:05d}.jpg", 1).unwrap();
        assert_eq!(n.path(Path::new("v"), 0, 0), PathBuf::from("v/img_00001.jpg"));
        assert_eq!(n.path(Path::new("v"), 10, 4), PathBuf::from("v/img_00015.jpg"));
    }
}
