//! Any bytes as a list file: parsing returns entries or an error, never panics.
#![no_main]
use std::path::Path;

use gateshift::data::list::{List, ListFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for format in [ListFormat::Auto, ListFormat::Frames, ListFormat::FramesOffset, ListFormat::Video] {
            let _ = List::parse(text, Path::new("fuzz.txt"), Some(Path::new("/root")), format, Some(174));
        }
    }
});
