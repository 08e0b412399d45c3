//! Group transforms: every frame of a clip gets the same crop, flip and scaling, as the
//! official `GroupMultiScaleCrop`, `GroupRandomHorizontalFlip`, `GroupScale`,
//! `GroupCenterCrop`, `GroupFullResSample` (three-crop) and `GroupOverSample` (five/ten-crop).

use image::{GrayImage, RgbImage};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::model::InputSpec;

/// A crop rectangle in pixels, plus whether the crop is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub flip: bool,
}

/// The official multi-scale crop scales.
pub const SCALES: [f64; 4] = [1.0, 0.875, 0.75, 0.66];
/// The flow stream's (tsn-pytorch `models.py`, `get_augmentation`: no 0.66).
pub const FLOW_SCALES: [f64; 3] = [1.0, 0.875, 0.75];

/// `fill_fix_offset`: the 5 (corners + centre) or 13 (`more_fix_crop`) fixed crop origins.
pub fn fixed_offsets(more: bool, image_w: u32, image_h: u32, crop_w: u32, crop_h: u32) -> Vec<(u32, u32)> {
    let ws = (image_w - crop_w) / 4;
    let hs = (image_h - crop_h) / 4;
    let mut v = vec![(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)];
    if more {
        v.extend([
            (0, 2 * hs),
            (4 * ws, 2 * hs),
            (2 * ws, 4 * hs),
            (2 * ws, 0),
            (ws, hs),
            (3 * ws, hs),
            (ws, 3 * hs),
            (3 * ws, 3 * hs),
        ]);
    }
    v
}

/// `GroupMultiScaleCrop(input_size, scales, max_distort=1, fix_crop=True, more_fix_crop=True)`
/// ([`SCALES`], or [`FLOW_SCALES`] for flow): a crop whose sides are scales of the short side
/// (aspect distorted by at most one scale step) at one of the 13 fixed positions. Resize to
/// `input_size` after.
pub fn multi_scale_crop(image_w: u32, image_h: u32, input_size: u32, scales: &[f64], rng: &mut impl Rng) -> Crop {
    let base = image_w.min(image_h) as f64;
    let sizes: Vec<u32> = scales
        .iter()
        .map(|s| {
            let x = (base * s) as u32;
            if (x as i64 - input_size as i64).abs() < 3 { input_size } else { x }
        })
        .collect();
    let mut pairs = Vec::new();
    for (i, &h) in sizes.iter().enumerate() {
        for (j, &w) in sizes.iter().enumerate() {
            if i.abs_diff(j) <= 1 {
                pairs.push((w.min(image_w), h.min(image_h)));
            }
        }
    }
    let &(w, h) = pairs.choose(rng).expect("non-empty");
    let &(x, y) = fixed_offsets(true, image_w, image_h, w, h).choose(rng).expect("non-empty");
    Crop { x, y, w, h, flip: false }
}

/// Test-time crops of a frame already scaled to short side `scale`: 1 (centre), 3 (left,
/// right, centre along the long side), 5 (corners + centre) or 10 (5 and their mirrors).
/// Refuses a test-crop count other than 1, 3, 5 or 10 (the official test protocols).
pub fn check_crops(n: usize) -> anyhow::Result<()> {
    if ![1, 3, 5, 10].contains(&n) {
        anyhow::bail!("test crops must be 1, 3, 5 or 10, not {n}");
    }
    Ok(())
}

pub fn test_crops(image_w: u32, image_h: u32, size: u32, n: usize) -> Vec<Crop> {
    let (cw, ch) = (size.min(image_w), size.min(image_h));
    let ws = (image_w - cw) / 4;
    let hs = (image_h - ch) / 4;
    let at = |(x, y): (u32, u32)| Crop { x, y, w: cw, h: ch, flip: false };
    match n {
        1 => vec![at(((image_w - cw) / 2, (image_h - ch) / 2))],
        3 => vec![at((0, 2 * hs)), at((4 * ws, 2 * hs)), at((2 * ws, 2 * hs))],
        5 | 10 => {
            let five: Vec<Crop> = fixed_offsets(false, image_w, image_h, cw, ch).into_iter().map(at).collect();
            let mut v = five.clone();
            if n == 10 {
                v.extend(five.into_iter().map(|c| Crop { flip: true, ..c }));
            }
            v
        }
        _ => panic!("test crops must be 1, 3, 5 or 10, not {n}"),
    }
}

/// Bilinear (antialiased, like PIL's `BILINEAR`) resize of the `(x, y, w, h)` region of
/// `img` (RGB or grey) to `out_w`×`out_h`, with SIMD where the CPU has it (`fast_image_resize`).
fn resize_region<P: image::Pixel<Subpixel = u8>>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    (x, y, w, h): (u32, u32, u32, u32),
    out_w: u32,
    out_h: u32,
) -> image::ImageBuffer<P, Vec<u8>> {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{FilterType as F, PixelType, ResizeAlg, ResizeOptions, Resizer};
    thread_local! {
        static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
    }
    let kind = if P::CHANNEL_COUNT == 1 { PixelType::U8 } else { PixelType::U8x3 };
    let (iw, ih) = img.dimensions();
    let src = ImageRef::new(iw, ih, img.as_raw(), kind).expect("buffer matches its size");
    let mut dst = Image::new(out_w, out_h, kind);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(F::Bilinear))
        .crop(x as f64, y as f64, w as f64, h as f64);
    RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &options)).expect("same pixel types");
    image::ImageBuffer::from_raw(out_w, out_h, dst.into_vec()).expect("buffer matches its size")
}

/// Resizes so that the short side is `short` (aspect kept), bilinear with antialiasing.
pub fn resize_short<P: image::Pixel<Subpixel = u8>>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    short: u32,
) -> image::ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    if w.min(h) == short {
        return img.clone();
    }
    let (nw, nh) = if w <= h {
        (short, ((h as f64 * short as f64 / w as f64).round() as u32).max(1))
    } else {
        (((w as f64 * short as f64 / h as f64).round() as u32).max(1), short)
    };
    resize_region(img, (0, 0, w, h), nw, nh)
}

/// Label swaps applied with a horizontal flip (e.g. Something-Something V1: 86↔87, 93↔94,
/// 166↔167 — "left to right" becomes "right to left").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlipMap(pub Vec<(usize, usize)>);

impl FlipMap {
    pub fn something_v1() -> Self {
        Self(vec![(86, 87), (93, 94), (166, 167)])
    }

    /// Parses "86:87,93:94" for a dataset of `classes` classes: every label must be a class.
    pub fn parse(s: &str, classes: usize) -> anyhow::Result<Self> {
        let mut v = Vec::new();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            let bad = |why: &str| anyhow::anyhow!("flip swap {s:?}: pair {:?} {why}", pair.trim());
            let (a, b) = pair.split_once(':').ok_or_else(|| bad("is not A:B"))?;
            let label = |x: &str| x.trim().parse::<usize>().map_err(|_| bad("holds a label that is not a number"));
            let (a, b) = (label(a)?, label(b)?);
            if a >= classes || b >= classes {
                return Err(bad(&format!("names a label outside the {classes} classes")));
            }
            v.push((a, b));
        }
        Ok(Self(v))
    }

    pub fn apply(&self, label: usize) -> usize {
        for &(a, b) in &self.0 {
            if label == a {
                return b;
            }
            if label == b {
                return a;
            }
        }
        label
    }
}

/// The `crop` of `img` at `size`²: the image itself with the crop's origin when the crop is
/// already that size (read in place, no copy), else the crop resized, from (0, 0).
fn cropped<P: image::Pixel<Subpixel = u8>>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    crop: Crop,
    size: u32,
) -> (std::borrow::Cow<'_, image::ImageBuffer<P, Vec<u8>>>, usize, usize) {
    if crop.w == size && crop.h == size {
        (std::borrow::Cow::Borrowed(img), crop.x as usize, crop.y as usize)
    } else {
        (std::borrow::Cow::Owned(resize_region(img, (crop.x, crop.y, crop.w, crop.h), size, size)), 0, 0)
    }
}

/// Appends the `crop` of `img`, scaled to `size`² and mirrored if asked, to `out` as
/// `(3, size, size)` floats normalised for the backbone: `(p · range/255 − mean) / std`, one
/// multiply-add per value. A crop already `size`² is read in place (no copy); otherwise one
/// resize. The mirror is folded into the reads, and values are appended without first
/// zero-filling the buffer.
pub fn crop_normalise_append(img: &RgbImage, crop: Crop, size: u32, spec: &InputSpec, out: &mut Vec<f32>) {
    let (src, x0, y0) = cropped(img, crop, size);
    let (stride, n) = (src.width() as usize, size as usize);
    let raw = src.as_raw();
    out.reserve(3 * n * n);
    for c in 0..3 {
        let channel = if spec.bgr { 2 - c } else { c };
        let scale = spec.range / 255.0 / spec.std[c];
        let offset = -spec.mean[c] / spec.std[c];
        let value = |p: &[u8]| p[channel] as f32 * scale + offset;
        for y in y0..y0 + n {
            let row = &raw[3 * (y * stride + x0)..3 * (y * stride + x0 + n)];
            if crop.flip {
                out.extend(row.chunks_exact(3).rev().map(value));
            } else {
                out.extend(row.chunks_exact(3).map(value));
            }
        }
    }
}

/// Appends one flow field's `crop`, scaled to `size`² and mirrored if asked, as `(2, size,
/// size)` floats normalised with the backbone's flow statistics ([`InputSpec::flow`]). A
/// mirrored field reverses horizontal motion, so the x plane is inverted (`255 − p`,
/// `GroupRandomHorizontalFlip(is_flow=True)` and `GroupOverSample`).
pub fn crop_normalise_flow_append(
    (x, y): (&GrayImage, &GrayImage),
    crop: Crop,
    size: u32,
    spec: &InputSpec,
    out: &mut Vec<f32>,
) {
    let (mean, std) = spec.flow();
    let scale = spec.range / 255.0 / std;
    let offset = -mean / std;
    for (k, plane) in [x, y].into_iter().enumerate() {
        let (src, x0, y0) = cropped(plane, crop, size);
        let (stride, n) = (src.width() as usize, size as usize);
        let invert = crop.flip && k == 0;
        let value = |p: &u8| (if invert { 255 - *p } else { *p }) as f32 * scale + offset;
        out.reserve(n * n);
        for row in y0..y0 + n {
            let row = &src.as_raw()[row * stride + x0..row * stride + x0 + n];
            if crop.flip {
                out.extend(row.iter().rev().map(value));
            } else {
                out.extend(row.iter().map(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn fixed_offsets_match_the_official_grid() {
        // 340×256 image, 224² crop: w_step 29, h_step 8.
        let o = fixed_offsets(true, 340, 256, 224, 224);
        assert_eq!(o.len(), 13);
        assert_eq!(&o[..5], &[(0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]);
        assert_eq!(o[12], (87, 24));
    }

    #[test]
    fn multi_scale_crop_sizes_are_scales_of_the_short_side() {
        // Short side 256: sizes 256, 224, 192, 168 (224 snaps to input 224); pairs |i-j| <= 1.
        let allowed = [256, 224, 192, 168];
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let c = multi_scale_crop(340, 256, 224, &SCALES, &mut rng);
            let (i, j) =
                (allowed.iter().position(|&a| a == c.h).unwrap(), allowed.iter().position(|&a| a == c.w).unwrap());
            assert!(i.abs_diff(j) <= 1, "{c:?}");
            assert!(c.x + c.w <= 340 && c.y + c.h <= 256);
            seen.insert((c.w, c.h));
        }
        assert_eq!(seen.len(), 10, "4 + 3 + 3 size pairs: {seen:?}");
    }

    #[test]
    fn test_crops_positions() {
        // 298×224 after scaling, 224 crops: w_step 18.
        let c3 = test_crops(298, 224, 224, 3);
        assert_eq!(c3.iter().map(|c| c.x).collect::<Vec<_>>(), vec![0, 72, 36]);
        let c10 = test_crops(256, 256, 224, 10);
        assert_eq!(c10.len(), 10);
        assert_eq!((c10[4].x, c10[4].y, c10[9].flip), (16, 16, true));
        assert_eq!(test_crops(256, 320, 224, 1)[0], Crop { x: 16, y: 48, w: 224, h: 224, flip: false });
    }

    #[test]
    fn flip_map_swaps_pairs() {
        let m = FlipMap::something_v1();
        assert_eq!((m.apply(86), m.apply(87), m.apply(93), m.apply(5)), (87, 86, 94, 5));
        assert_eq!(FlipMap::parse("0:1, 2:3", 4).unwrap().apply(3), 2);
        for (bad, says) in [("0:1,2", "not A:B"), ("a:b", "not a number"), ("0:99", "outside the 4 classes")] {
            let e = FlipMap::parse(bad, 4).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains(says), "{e:?}");
        }
    }

    #[test]
    fn crop_flip_and_normalise() {
        let mut img = RgbImage::new(4, 3);
        img.put_pixel(1, 1, image::Rgb([255, 0, 10]));
        // The 2×2 crop at (1, 1), mirrored: source pixel (1, 1) lands at (1, 0).
        let caffe = InputSpec { size: 2, bgr: true, range: 255.0, mean: [104.0, 117.0, 128.0], std: [1.0; 3] };
        let mut buf = vec![7.0];
        crop_normalise_append(&img, Crop { x: 1, y: 1, w: 2, h: 2, flip: true }, 2, &caffe, &mut buf);
        assert_eq!(buf.len(), 1 + 12, "appended after what was there");
        let buf = &buf[1..];
        // BGR: channel 0 is blue (10 - 104), channel 2 red (255 - 128), at pixel (1, 0).
        assert_eq!((buf[1], buf[4 + 1], buf[8 + 1]), (-94.0, -117.0, 127.0));
        assert_eq!((buf[0], buf[2], buf[3]), (-104.0, -104.0, -104.0));
        let imagenet = InputSpec { size: 2, bgr: false, range: 1.0, mean: [0.5; 3], std: [0.25; 3] };
        let mut buf = Vec::new();
        crop_normalise_append(&img, Crop { x: 1, y: 1, w: 2, h: 2, flip: false }, 2, &imagenet, &mut buf);
        assert!((buf[0] - 2.0).abs() < 1e-6 && (buf[8] - (10.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
    }

    #[test]
    fn crop_with_resize_matches_a_uniform_image() {
        // A uniform image stays uniform through any crop and resize.
        let img = RgbImage::from_pixel(40, 30, image::Rgb([51, 102, 204]));
        let spec = InputSpec { size: 8, bgr: false, range: 255.0, mean: [0.0; 3], std: [1.0; 3] };
        let mut buf = Vec::new();
        crop_normalise_append(&img, Crop { x: 3, y: 2, w: 21, h: 17, flip: true }, 8, &spec, &mut buf);
        assert_eq!(buf.len(), 3 * 64);
        assert!(buf[..64].iter().all(|&v| v == 51.0) && buf[128..].iter().all(|&v| v == 204.0));
    }

    /// A mirrored flow field: both planes mirrored, the x plane inverted (motion to the right
    /// becomes motion to the left); normalised with the backbone's flow statistics.
    #[test]
    fn flow_crops_invert_x_under_a_flip() {
        let x = GrayImage::from_fn(3, 2, |c, r| image::Luma([(10 * c + 100 * r) as u8]));
        let y = GrayImage::from_fn(3, 2, |c, _| image::Luma([200 + c as u8]));
        let caffe = InputSpec { size: 2, bgr: true, range: 255.0, mean: [104.0, 117.0, 128.0], std: [1.0; 3] };
        let crop = Crop { x: 1, y: 0, w: 2, h: 2, flip: false };
        let mut plain = Vec::new();
        crop_normalise_flow_append((&x, &y), crop, 2, &caffe, &mut plain);
        assert_eq!(plain, [10.0, 20.0, 110.0, 120.0, 201.0, 202.0, 201.0, 202.0].map(|p| p - 128.0));
        let mut flipped = Vec::new();
        crop_normalise_flow_append((&x, &y), Crop { flip: true, ..crop }, 2, &caffe, &mut flipped);
        let inverted = [20.0, 10.0, 120.0, 110.0].map(|p| 255.0 - p - 128.0);
        assert_eq!(flipped, [inverted.as_slice(), &[202.0, 201.0, 202.0, 201.0].map(|p| p - 128.0)].concat());
        // ResNet: mean 0.5, std the mean of the RGB stds, on 0–1 pixels.
        let imagenet = InputSpec { size: 2, bgr: false, range: 1.0, mean: [0.4; 3], std: [0.2, 0.25, 0.3] };
        let mut v = Vec::new();
        crop_normalise_flow_append((&x, &y), crop, 2, &imagenet, &mut v);
        assert!((v[0] - (10.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6, "{}", v[0]);
    }
}
