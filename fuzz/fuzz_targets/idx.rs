//! Any bytes given to the IDX parser give data or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    for dims in [1, 3] {
        if let Ok((shape, values)) = keel::datasets::idx::parse(data, dims, Path::new("fuzz")) {
            assert_eq!(shape.iter().product::<usize>(), values.len());
        }
    }
});
