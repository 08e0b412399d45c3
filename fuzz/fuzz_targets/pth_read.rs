//! Any bytes as a checkpoint file (`.pth` zip, legacy pickle, or safetensors): reading returns
//! tensors or an error, never panics and never executes anything.
#![no_main]
use gateshift::checkpoint::StateDict;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("gateshift-fuzz-{}.pth", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = StateDict::read(&path);
    }
});
