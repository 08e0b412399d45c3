//! Upper bounds on values that size an allocation, a thread pool or a loop: a count read
//! from a file or a flag is checked against them before anything is allocated, so that a
//! small file or a typo cannot take the machine's memory (docs/RELIABILITY.md). Each is far
//! above what a real model or dataset uses.

use anyhow::{Result, bail};

/// Frames per clip (segments, dense clip length, streaming window): the paper uses 8–16,
/// 3D networks 64–250.
pub const MAX_SEGMENTS: usize = 1024;
/// RGB differences per segment (TSN uses 5).
pub const MAX_NEW_LENGTH: usize = 64;
/// Classes of a model or list (ImageNet-21k has 21,841).
pub const MAX_CLASSES: usize = 100_000;
/// Frames a list entry may claim, and its first-frame offset: 10⁸ frames is 38 days at 30 fps.
pub const MAX_LIST_FRAMES: usize = 100_000_000;
/// Pixels of one decoded frame or image (JPEG/PNG header, video stream, scaled output):
/// 2²⁶ ≈ 67 M, an 8192² image or twice 8K video; 201 MB as RGB bytes.
pub const MAX_FRAME_PIXELS: u64 = 1 << 26;
/// Side of a network input, a pre-crop scale or a generated frame.
pub const MAX_SIDE: u32 = 8192;
/// Loader worker threads.
pub const MAX_WORKERS: usize = 1024;
/// Seconds a data-parallel rank waits for the others in one collective: a week.
pub const MAX_WAIT_S: u64 = 7 * 24 * 3600;
/// Devices of one process (`train --devices`): one thread and one model copy each.
pub const MAX_DEVICES: usize = 64;
/// Samples prefetched by the loader beyond the one being batched.
pub const MAX_PREFETCH: usize = 65_536;
/// Clips in one batch.
pub const MAX_BATCH: usize = 65_536;

/// `value` if it is at most `max`, else an error naming `what`.
pub fn at_most<T: PartialOrd + std::fmt::Display>(what: &str, value: T, max: T) -> Result<T> {
    if value > max {
        bail!("{what} {value} is more than the largest supported ({max}; docs/RELIABILITY.md)");
    }
    Ok(value)
}

/// A frame of `w`×`h` pixels, refused (naming `what`) when it is empty or over
/// [`MAX_FRAME_PIXELS`], before its buffer is allocated.
pub fn frame_pixels(what: &str, w: u64, h: u64) -> Result<()> {
    if w == 0 || h == 0 {
        bail!("{what} is {w}×{h} pixels: empty");
    }
    if w.saturating_mul(h) > MAX_FRAME_PIXELS {
        bail!("{what} declares {w}×{h} pixels, more than the largest supported frame ({MAX_FRAME_PIXELS} pixels)");
    }
    Ok(())
}

/// clap parser for a count or size that must be at least 1 (segments, classes, batch
/// sizes, crop sides, top-k, …): zero is refused with the flag named, before any work.
pub fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err("not a whole number".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_value_and_the_limit() {
        assert_eq!(at_most("--workers", 8, MAX_WORKERS).unwrap(), 8);
        let e = at_most("--workers", 100_000, MAX_WORKERS).unwrap_err().to_string();
        assert!(e.contains("--workers 100000") && e.contains("1024"), "{e}");
        frame_pixels("frame a.jpg", 1920, 1080).unwrap();
        let e = frame_pixels("frame a.jpg", 20_000, 20_000).unwrap_err().to_string();
        assert!(e.contains("a.jpg") && e.contains("20000×20000"), "{e}");
        assert!(frame_pixels("x", u64::MAX, u64::MAX).is_err());
        assert!(frame_pixels("x", 0, 5).is_err());
    }
}
