//! The real images the synthetic clips are made of: Fashion-MNIST items (Debian package
//! `dataset-fashion-mnist`, IDX files) as objects and photos (scikit-image's sample images,
//! fetched by `gateshift assets fetch skimage-data`) as backgrounds.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;
use image::RgbImage;

use super::render::Sprite;

/// Where Debian installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Objects for training and validation clips (disjoint items) and background photos.
pub struct Sources {
    pub train_sprites: Vec<Sprite>,
    pub val_sprites: Vec<Sprite>,
    pub photos: Vec<RgbImage>,
}

impl Sources {
    /// Loads up to `max_items` items from each Fashion-MNIST split in `fashion_dir` and every
    /// colour photo at least 256 px on its short side in `photo_dir`.
    pub fn load(fashion_dir: &Path, photo_dir: &Path, max_items: usize) -> Result<Self> {
        let train_sprites = read_idx_images(&fashion_dir.join("train-images-idx3-ubyte.gz"), max_items)?;
        let val_sprites = read_idx_images(&fashion_dir.join("t10k-images-idx3-ubyte.gz"), max_items)?;
        let photos = read_photos(photo_dir)?;
        Ok(Self { train_sprites, val_sprites, photos })
    }
}

/// Reads an IDX3 (gzipped) image file: magic 0x00000803, count, rows, cols, then bytes.
pub fn read_idx_images(path: &Path, max_items: usize) -> Result<Vec<Sprite>> {
    let file = crate::io::open_regular(path, "IDX file")
        .context("install Debian's dataset-fashion-mnist: scripts/setup.sh")?;
    // Fashion-MNIST's 60,000 28×28 images are 47 MB; a gzip stream may claim any size.
    const MAX_BYTES: u64 = 1 << 30;
    let mut bytes = Vec::new();
    GzDecoder::new(file)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("decompressing {}", path.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        bail!("{} decompresses to more than {MAX_BYTES} bytes", path.display());
    }
    let word = |i: usize| -> Result<usize> {
        let b = bytes.get(4 * i..4 * i + 4).ok_or_else(|| anyhow::anyhow!("{}: truncated header", path.display()))?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if word(0)? != 0x803 {
        bail!("{} is not an IDX3 image file", path.display());
    }
    let (n, rows, cols) = (word(1)?, word(2)?, word(3)?);
    let need = n.checked_mul(rows).and_then(|v| v.checked_mul(cols)).and_then(|v| v.checked_add(16));
    if rows != cols || need.is_none_or(|need| bytes.len() < need) {
        bail!("{}: truncated or non-square images", path.display());
    }
    Ok((0..n.min(max_items))
        .map(|i| Sprite { size: rows, pixels: bytes[16 + i * rows * cols..16 + (i + 1) * rows * cols].to_vec() })
        .collect())
}

/// A photo, its declared size checked against the frame-pixel cap before decoding.
fn open_photo(path: &Path) -> Result<image::DynamicImage> {
    crate::io::require_regular(path, "photo")?;
    let (w, h) = image::ImageReader::open(path)?.with_guessed_format()?.into_dimensions()?;
    crate::limits::frame_pixels("the photo", w as u64, h as u64)?;
    Ok(image::ImageReader::open(path)?.with_guessed_format()?.decode()?)
}

/// Every PNG/JPEG in `dir` whose short side is at least 256 px and that is in colour.
pub fn read_photos(dir: &Path) -> Result<Vec<RgbImage>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!("cannot read photo folder {} (run `gateshift assets fetch skimage-data`)", dir.display())
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "png" | "jpg" | "jpeg")))
        .collect();
    files.sort();
    let mut photos = Vec::new();
    for f in files {
        let img = open_photo(&f).with_context(|| format!("decoding photo {}", f.display()))?;
        let colour = matches!(img.color(), image::ColorType::Rgb8 | image::ColorType::Rgba8);
        if colour && img.width().min(img.height()) >= 256 {
            photos.push(img.into_rgb8());
        }
    }
    if photos.is_empty() {
        bail!("no colour photos of at least 256 px in {}", dir.display());
    }
    Ok(photos)
}
