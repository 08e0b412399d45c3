//! Any string as a frame template and any file name: parse, format and match never panic, and
//! a formatted index always reads back as itself.
#![no_main]
use gateshift::data::rawframes::Template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, u32)| {
    let (template, name, index) = input;
    if let Ok(t) = Template::parse(template) {
        let formatted = t.format(index as usize);
        let _ = t.index_of(name);
        if let Some(back) = t.index_of(&formatted) {
            assert_eq!(back, index as usize, "{template:?} → {formatted:?}");
        }
    }
});
