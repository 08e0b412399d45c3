//! Any bytes as the start of a checkpoint: the safetensors-or-PyTorch decision (header length,
//! then a JSON object that fits) and the safetensors parse never panic, and whatever the
//! decision says is safetensors either parses or is refused with an error.
#![no_main]
use gateshift::checkpoint::safetensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let _ = safetensors::header_len(data, len);
    if safetensors::is_header(data, len) {
        let _ = safetensors::parse(data);
    }
    // The file could be longer than what was read: the decision must hold up either way.
    let _ = safetensors::is_header(data, len.saturating_mul(2));
});
