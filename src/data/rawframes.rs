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

/// The RGB frames' default template (the official code's).
pub const RGB_TEMPLATE: &str = "img_{:05d}.jpg";
/// The flow fields' default template: `{}` the direction (x, y), then the index, as
/// mmaction2 names them and `data extract-flow` writes them.
pub const FLOW_TEMPLATE: &str = "{}_{:05d}.jpg";

/// How frames of a rawframe dataset are named on disk.
#[derive(Clone, Debug)]
pub struct FrameNaming {
    /// The frames' template; for flow, the x component's.
    pub template: Template,
    /// Flow: the y component's template, when the template names a direction
    /// (`{}_{:05d}.jpg`, tsn-pytorch's `flow_{}_{:05d}.jpg`).
    pub y_template: Option<Template>,
    /// Index of the first frame file (1 for the official code's `img_00001.jpg`).
    pub first_index: usize,
}

impl FrameNaming {
    /// A template with one placeholder names frames; one whose first placeholder is a bare
    /// `{}` before the index names flow fields, `{}` standing for `x` or `y`.
    pub fn new(template: &str, first_index: usize) -> Result<Self> {
        limits::at_most("--first-index", first_index, limits::MAX_LIST_FRAMES)?;
        let directed = template.matches('{').count() == 2 && template.find('{') == template.find("{}");
        if directed {
            let (x, y) = (template.replacen("{}", "x", 1), template.replacen("{}", "y", 1));
            return Ok(Self { template: Template::parse(&x)?, y_template: Some(Template::parse(&y)?), first_index });
        }
        Ok(Self { template: Template::parse(template)?, y_template: None, first_index })
    }

    /// The naming for `modality`'s inputs: the RGB default template stands for the flow
    /// default when flow is read.
    pub fn for_modality(template: &str, first_index: usize, modality: crate::model::Modality) -> Result<Self> {
        let flow = modality == crate::model::Modality::Flow;
        let template = if flow && template == RGB_TEMPLATE { FLOW_TEMPLATE } else { template };
        let naming = Self::new(template, first_index)?;
        if flow && naming.y_template.is_none() {
            bail!(
                "flow template {template:?} names one file per field; flow reads an x and a y image: \
                 give the direction as {{}}, e.g. {FLOW_TEMPLATE} or flow_{{}}_{{:05d}}.jpg"
            );
        }
        Ok(naming)
    }

    /// The y component's file of 0-based flow field `frame` (flow namings only).
    pub fn y_path(&self, dir: &Path, start: usize, frame: usize) -> Option<PathBuf> {
        self.y_template.as_ref().map(|t| dir.join(t.format(self.first_index + start + frame)))
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

/// Decodes an image file to grey levels (a flow plane); the error names the file.
pub fn read_grey(path: &Path) -> Result<image::GrayImage> {
    let bytes = crate::io::read_regular(path, "flow image")?;
    if bytes.is_empty() {
        bail!("flow image {} is empty (0 bytes)", path.display());
    }
    let grey = if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(&bytes, turbojpeg::PixelFormat::GRAY).map(|(w, h, p)| image::GrayImage::from_raw(w, h, p))
    } else {
        decode_image(&bytes).map(|rgb| Some(image::DynamicImage::ImageRgb8(rgb).into_luma8()))
    };
    grey.with_context(|| format!("cannot decode flow image {}", path.display()))?
        .ok_or_else(|| anyhow::anyhow!("flow image {}: decoded size mismatch", path.display()))
}

/// Decodes JPEG (libjpeg-turbo) or any format `image` reads (PNG, …) from memory, the
/// declared size checked first.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let (w, h, pixels) = decode_jpeg(bytes, turbojpeg::PixelFormat::RGB)?;
        return RgbImage::from_raw(w, h, pixels).ok_or_else(|| anyhow::anyhow!("decoded size mismatch"));
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
/// upsampling) to `format` (RGB or GRAY): width, height, pixels. A corrupt or truncated
/// stream is an error, not a partly grey frame.
fn decode_jpeg(bytes: &[u8], format: turbojpeg::PixelFormat) -> Result<(u32, u32, Vec<u8>)> {
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
        let size = format.size();
        let mut pixels = vec![0u8; size * w * h];
        let image = turbojpeg::Image { pixels: pixels.as_mut_slice(), width: w, pitch: size * w, height: h, format };
        d.decompress(bytes, image)?;
        Ok((w as u32, h as u32, pixels))
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
    fn flow_templates_name_both_directions() {
        use crate::model::Modality;
        let n = FrameNaming::new("flow_{}_{:05d}.jpg", 1).unwrap();
        assert_eq!(n.path(Path::new("v"), 0, 2), PathBuf::from("v/flow_x_00003.jpg"));
        assert_eq!(n.y_path(Path::new("v"), 0, 2), Some(PathBuf::from("v/flow_y_00003.jpg")));
        let n = FrameNaming::for_modality(RGB_TEMPLATE, 1, Modality::Flow).unwrap();
        assert_eq!(n.template.format(1), "x_00001.jpg");
        assert!(FrameNaming::for_modality(RGB_TEMPLATE, 1, Modality::Rgb).unwrap().y_template.is_none());
        let e = FrameNaming::for_modality("x_{:05d}.jpg", 1, Modality::Flow).unwrap_err().to_string();
        assert!(e.contains("x_{:05d}.jpg") && e.contains("{}_{:05d}.jpg"), "{e}");
        assert!(FrameNaming::new("{:05d}_{}.jpg", 1).is_err(), "the index first, then a second placeholder");
    }

    #[test]
    fn frame_paths_apply_first_index_and_offset() {
        let n = FrameNaming::new("img_{:05d}.jpg", 1).unwrap();
        assert_eq!(n.path(Path::new("v"), 0, 0), PathBuf::from("v/img_00001.jpg"));
        assert_eq!(n.path(Path::new("v"), 10, 4), PathBuf::from("v/img_00015.jpg"));
    }
}
