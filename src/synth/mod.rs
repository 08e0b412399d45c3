//! `gateshift synth`: a Something-Something-like dataset whose classes come in
//! time-reversal pairs (left→right / right→left, up / down, approaching / receding,
//! appearing / disappearing, clockwise / counter-clockwise). The odd class of each pair is
//! the even class's clip played backwards, so the *set* of frames carries no information
//! about the class within a pair: only the order does. Objects are Fashion-MNIST items,
//! backgrounds real photos, with random positions, speeds, clip lengths, colours, camera
//! jitter and noise. Written in the rawframe layout (`img_{:05d}.jpg`, 1-based).

pub mod render;
pub mod sources;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::loader::sample_rng;
use crate::io::write_atomic;
use render::{Motion, Sprite};

/// Generator settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Training clips per class.
    pub train_per_class: usize,
    /// Validation clips per class.
    pub val_per_class: usize,
    /// Frame side in pixels.
    pub size: u32,
    /// Clip length range in frames (inclusive).
    pub min_frames: usize,
    pub max_frames: usize,
    /// Number of class pairs (1–5).
    pub pairs: usize,
    /// Noise standard deviation range (0–255 scale).
    pub noise: (f32, f32),
    pub seed: u64,
    pub jpeg_quality: u8,
    /// Background contrast (1 = the photo as is; lower values fade it towards grey so the
    /// object stands out).
    #[serde(default = "default_contrast")]
    pub background_contrast: f32,
}

fn default_contrast() -> f32 {
    0.5
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            train_per_class: 100,
            val_per_class: 30,
            size: 64,
            min_frames: 16,
            max_frames: 32,
            pairs: 5,
            noise: (2.0, 8.0),
            seed: 0,
            jpeg_quality: 90,
            background_contrast: default_contrast(),
        }
    }
}

/// Class names in label order.
pub fn class_names(pairs: usize) -> Vec<String> {
    Motion::ALL[..pairs].iter().flat_map(|m| [m.names().0.to_string(), m.names().1.to_string()]).collect()
}

/// Label swaps a horizontal flip causes among the first `pairs` pairs ("0:1,8:9"): mirroring
/// turns left→right into right→left and clockwise into counter-clockwise.
pub fn flip_swap(pairs: usize) -> String {
    Motion::ALL[..pairs.min(Motion::ALL.len())]
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m, Motion::LeftToRight | Motion::RotatingClockwise))
        .map(|(i, _)| format!("{}:{}", 2 * i, 2 * i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Renders clip frames of `class` (2·pair + reversed).
pub fn render_clip(
    class: usize,
    cfg: &SynthConfig,
    sprites: &[Sprite],
    photos: &[RgbImage],
    rng: &mut impl Rng,
) -> Vec<RgbImage> {
    let motion = Motion::ALL[class / 2];
    let frames = rng.random_range(cfg.min_frames..=cfg.max_frames);
    let size = cfg.size;
    let sprite = &sprites[rng.random_range(0..sprites.len())];
    let tint = render::random_tint(rng);
    let photo = &photos[rng.random_range(0..photos.len())];
    let short = ((size as f32 * rng.random_range(1.3..2.5)) as u32).max(size + 8);
    let mut photo = crate::data::transform::resize_short(photo, short);
    let k = cfg.background_contrast;
    for p in photo.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (128.0 + k * (*c as f32 - 128.0)).clamp(0.0, 255.0) as u8;
        }
    }
    let (pw, ph) = photo.dimensions();
    let jitter = 3.0f32;
    let (mut ox, mut oy) = (
        rng.random_range(jitter..(pw - size) as f32 - jitter + 1.0),
        rng.random_range(jitter..(ph - size) as f32 - jitter + 1.0),
    );
    let (x_lo, x_hi, y_lo, y_hi) = (ox - jitter, ox + jitter, oy - jitter, oy + jitter);
    let (ox0, oy0) = (ox, oy);
    let sigma = rng.random_range(cfg.noise.0..=cfg.noise.1);
    let poses = motion.poses(frames, size as f32, rng);
    let mut out: Vec<RgbImage> = poses
        .into_iter()
        .map(|mut pose| {
            ox = (ox + rng.random_range(-1.0..=1.0)).clamp(x_lo, x_hi);
            oy = (oy + rng.random_range(-1.0..=1.0)).clamp(y_lo, y_hi);
            let mut frame = image::imageops::crop_imm(&photo, ox as u32, oy as u32, size, size).to_image();
            // The camera moved by (ox − ox0, oy − oy0): the object moves the other way on screen.
            pose.cx -= ox.floor() - ox0.floor();
            pose.cy -= oy.floor() - oy0.floor();
            render::draw(&mut frame, sprite, pose, tint);
            render::add_noise(&mut frame, sigma, rng);
            frame
        })
        .collect();
    if class % 2 == 1 {
        out.reverse();
    }
    out
}

/// Encodes `img` as JPEG.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(img).context("encoding JPEG")?;
    Ok(bytes)
}

/// Summary of a written dataset.
#[derive(Clone, Debug)]
pub struct Written {
    pub root: PathBuf,
    pub train_list: PathBuf,
    pub val_list: PathBuf,
    pub classes: PathBuf,
    pub clips: usize,
}

/// Refuses a pair count the motions cannot fill.
pub fn check_pairs(pairs: usize) -> Result<()> {
    if pairs == 0 || pairs > Motion::ALL.len() {
        bail!("--pairs must be 1..={}", Motion::ALL.len());
    }
    Ok(())
}

/// Writes the dataset under `out`: `frames/<split>/<clip>/img_00001.jpg`, `train.txt`,
/// `val.txt` (`<dir> <num_frames> <label>`, relative to `out`), `classes.txt`,
/// `synth.toml`. Training clips use the Fashion-MNIST training items, validation clips
/// the test items. `progress` is called after every clip.
pub fn generate(
    cfg: &SynthConfig,
    sources: &sources::Sources,
    out: &Path,
    progress: &(dyn Fn() + Sync),
) -> Result<Written> {
    check_pairs(cfg.pairs)?;
    if cfg.min_frames == 0 || cfg.min_frames > cfg.max_frames || cfg.size < 16 {
        bail!("bad synth settings: frames {}..={}, size {}", cfg.min_frames, cfg.max_frames, cfg.size);
    }
    // Its lists and frames would replace a folder's own `train.txt`, `frames/`, …: only an
    // empty folder or an earlier synth dataset (its `synth.toml`) is written into.
    let holds_files = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if holds_files && !out.join("synth.toml").is_file() {
        bail!("{} is not empty and holds no synth dataset (no synth.toml): choose another --out", out.display());
    }
    let classes = 2 * cfg.pairs;
    let mut lists = Vec::new();
    for (split, per_class, sprites, stream) in [
        ("train", cfg.train_per_class, &sources.train_sprites, 0usize),
        ("val", cfg.val_per_class, &sources.val_sprites, 1),
    ] {
        let jobs: Vec<(usize, usize)> = (0..per_class).flat_map(|i| (0..classes).map(move |c| (c, i))).collect();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let chunk = jobs.len().div_ceil(threads).max(1);
        let lines: Vec<Result<Vec<String>>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || -> Result<Vec<String>> {
                        let mut lines = Vec::new();
                        for &(c, i) in part {
                            let mut rng = sample_rng(cfg.seed, stream, i * classes + c);
                            let frames = render_clip(c, cfg, sprites, &sources.photos, &mut rng);
                            let dir = format!("frames/{split}/{c:02}_{i:05}");
                            for (k, f) in frames.iter().enumerate() {
                                let path = out.join(&dir).join(format!("img_{:05}.jpg", k + 1));
                                write_atomic(&path, &encode_jpeg(f, cfg.jpeg_quality)?)?;
                            }
                            lines.push(format!("{dir} {} {c}", frames.len()));
                            progress();
                        }
                        Ok(lines)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("synth worker panicked")).collect()
        });
        let mut all = Vec::new();
        for l in lines {
            all.extend(l?);
        }
        let list = out.join(format!("{split}.txt"));
        write_atomic(&list, (all.join("\n") + "\n").as_bytes())?;
        lists.push((list, all.len()));
    }
    let names = out.join("classes.txt");
    write_atomic(&names, (class_names(cfg.pairs).join("\n") + "\n").as_bytes())?;
    write_atomic(&out.join("synth.toml"), toml::to_string(cfg)?.as_bytes())?;
    Ok(Written {
        root: out.to_path_buf(),
        clips: lists[0].1 + lists[1].1,
        train_list: lists[0].0.clone(),
        val_list: lists[1].0.clone(),
        classes: names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn toy_sources() -> (Vec<Sprite>, Vec<RgbImage>) {
        let mut px = vec![0u8; 28 * 28];
        for y in 4..24 {
            for x in 8..20 {
                px[y * 28 + x] = 255;
            }
        }
        (vec![Sprite { size: 28, pixels: px }], vec![RgbImage::from_pixel(200, 200, image::Rgb([20, 20, 20]))])
    }

    /// Horizontal centre of mass of bright pixels.
    fn centroid_x(img: &RgbImage) -> f32 {
        let (mut s, mut n) = (0.0, 0.0);
        for (x, _, p) in img.enumerate_pixels() {
            if p.0.iter().map(|&v| v as u32).sum::<u32>() > 300 {
                s += x as f32;
                n += 1.0;
            }
        }
        s / n
    }

    #[test]
    fn reversed_class_is_the_forward_clip_backwards() {
        let (sprites, photos) = toy_sources();
        let cfg = SynthConfig { noise: (0.0, 0.0), ..Default::default() };
        let fwd = render_clip(0, &cfg, &sprites, &photos, &mut ChaCha8Rng::seed_from_u64(5));
        let bwd = render_clip(1, &cfg, &sprites, &photos, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(fwd.len(), bwd.len());
        assert!(fwd.iter().zip(bwd.iter().rev()).all(|(a, b)| a == b));
        // Class 0 moves left to right.
        assert!(centroid_x(fwd.last().unwrap()) > centroid_x(&fwd[0]) + 10.0);
        assert_eq!(class_names(5).len(), 10);
        assert_eq!(flip_swap(3), "0:1");
        assert_eq!(flip_swap(5), "0:1,8:9");
    }
}
