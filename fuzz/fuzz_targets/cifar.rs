//! Any bytes given to the CIFAR batch parser give records or an error, never a panic.
#![no_main]

use keel::datasets::cifar::parse_batch;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    for (label_bytes, label_at, classes) in [(1, 0, 10), (2, 0, 20), (2, 1, 100)] {
        if let Ok((pixels, labels)) = parse_batch(data, label_bytes, label_at, classes, Path::new("fuzz")) {
            assert_eq!(pixels.len(), labels.len() * 32 * 32 * 3);
        }
    }
});
