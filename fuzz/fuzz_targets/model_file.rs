//! Any bytes loaded as a model file give a model or an error: no panic, no
//! allocation beyond what the bytes describe.
#![no_main]

use keel::model::Model;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = Model::load_bytes(data, Path::new("fuzz.keel"));
});
