//! Models: graphs of layers built with `Sequential` or the functional API
//! (shape inference, parameter layout), compile, fit, evaluate, predict, and
//! the Keras-style summary and progress output.

mod architecture;
mod functional;
mod graph;
mod history;
mod network;
mod progress;
mod report;
mod summary;
mod training;

pub use architecture::{Architecture, CompileConfig, DataInfo, FitDefaults, LayerEntry, MAX_SAMPLE_ELEMENTS};
pub use functional::{LayerHandle, Model, Sequential, WeightInfo};
pub use graph::{Input, IntoInputs, LayerExt, Spec, SymbolicTensor};
pub use history::{EpochLog, Evaluation, History, Logs};
pub use progress::{Verbosity, format_progress_line};
pub use report::{ClassScores, ClassificationReport, Confusion};
pub use summary::shape_str;
pub use training::{FitOptions, validation_split_at};
