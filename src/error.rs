//! One error type for the whole crate: every message names the problem and, where
//! there is one, the fix.

use std::path::PathBuf;

/// Everything that can go wrong in keel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor or argument has the wrong shape.
    #[error("shape error: {0}")]
    Shape(String),
    /// A layer stack that cannot be built (the message names the layer and the shapes).
    #[error("cannot build model: {0}")]
    Build(String),
    /// An argument outside its allowed range or an unknown name.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `fit`/`evaluate`/`predict` called before `compile`, and the like.
    #[error("{0}")]
    State(String),
    /// A data file that exists but cannot be used.
    #[error("{}: {message}", path.display())]
    CorruptFile { path: PathBuf, message: String },
    /// A dataset whose files are nowhere to be found.
    #[error("{0}")]
    DatasetNotFound(String),
    /// A download that failed or did not match its checksum.
    #[error("download failed: {0}")]
    Download(String),
    /// Training diverged.
    #[error(
        "loss became {value} at epoch {epoch}, batch {batch}: training diverged; lower the learning rate or check the inputs for NaN/inf"
    )]
    NonFiniteLoss { value: f32, epoch: usize, batch: usize },
    /// An operating-system I/O failure, with the path involved.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with keel's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
