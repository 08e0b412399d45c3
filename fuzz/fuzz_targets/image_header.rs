//! Any bytes as a frame file: JPEG (libjpeg-turbo) or another image format decodes or is an
//! error, never a panic, and never allocates for a size beyond the frame-pixel cap (run with
//! `-rss_limit_mb` / `-malloc_limit_mb`, as `scripts/fuzz.sh` does).
#![no_main]
use gateshift::data::rawframes::decode_image;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_image(data) {
        assert!((img.width() as u64) * (img.height() as u64) <= gateshift::limits::MAX_FRAME_PIXELS);
    }
});
