//! Any bytes → load → analyze → every pass of the catalogue (see `checks.rs`).
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::import_passes(data));
