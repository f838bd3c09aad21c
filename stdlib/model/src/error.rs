//! The error type of the model runtime.

use std::path::{Path, PathBuf};

/// Everything that can go wrong loading, running, saving or training a model.
/// The message names the file (when there is one) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is wrong (bad JSON, missing field, shape mismatch...).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A request that cannot be served (token out of range, empty input...).
    #[error("{0}")]
    Input(String),
    /// The device (a GPU) failed or is missing what it needs.
    #[error("CUDA: {0}")]
    Device(String),
    /// Training was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ModelError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_to_string(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let io = |e| ModelError::io(path, e);
    let mut f = atomic_write_file::AtomicWriteFile::open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.commit().map_err(io)
}
