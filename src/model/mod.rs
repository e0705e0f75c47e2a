//! Models: build (shape inference, parameter layout), compile, fit, evaluate,
//! predict, and the Keras-style summary and progress output.

mod architecture;
mod history;
mod network;
mod progress;
mod sequential;
mod summary;
mod training;

pub use architecture::{Architecture, CompileConfig, DataInfo, FitDefaults, MAX_SAMPLE_ELEMENTS};
pub use history::{EpochLog, Evaluation, History, Logs};
pub use progress::{Verbosity, format_progress_line};
pub use sequential::{Sequential, WeightInfo};
pub use training::{FitOptions, validation_split_at};
