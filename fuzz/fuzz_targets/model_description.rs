//! Any text given as a TOML or JSON model description (`keel train --model`)
//! gives a model or an error, never a panic. Models are built only when
//! small (the memory bound of large ones is tested elsewhere), so that a
//! valid description of a huge model does not count as a crash.
#![no_main]

use keel::layers::LayerConfig;
use keel::model::{Architecture, Model};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Whether building this architecture allocates little.
fn small(architecture: &Architecture) -> bool {
    architecture.input_shape.iter().product::<usize>() <= 32 * 32 * 3
        && architecture.layers.len() <= 32
        && architecture.layers.iter().all(|l| match l.config {
            LayerConfig::Dense { units, .. } => units <= 256,
            LayerConfig::Conv2D { filters, .. } | LayerConfig::SeparableConv2D { filters, .. } => filters <= 64,
            LayerConfig::UpSampling2D { size, .. } => size.0 * size.1 <= 16,
            LayerConfig::Resizing { height, width } => height * width <= 64 * 64,
            LayerConfig::ZeroPadding2D { padding } => padding.0.iter().flatten().all(|&p| p <= 16),
            _ => true,
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for is_toml in [true, false] {
        if let Ok(architecture) = Architecture::parse(text, is_toml, Path::new("fuzz")) {
            for layer in &architecture.layers {
                let _ = layer.config.to_layer();
            }
            if small(&architecture) {
                let _ = Model::from_architecture(&architecture);
            }
        }
    }
});
