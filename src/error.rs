//! The crate's one error type. Each variant carries what was expected and what came.

use std::path::PathBuf;

/// Errors at hw9's public boundaries (constructors, loaders, checks, plots).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor of the wrong shape, e.g. `expected (2, 49, 48), got (2, 48, 49)`.
    #[error("{what}: expected shape {}, got {}", fmt_shape(.expected), fmt_shape(.got))]
    Shape {
        /// What had the wrong shape.
        what: String,
        /// The shape it should have had.
        expected: Vec<i64>,
        /// The shape it had.
        got: Vec<i64>,
    },

    /// A tensor of the wrong dtype.
    #[error("{what}: expected dtype {expected:?}, got {got:?}")]
    Kind {
        /// What had the wrong dtype.
        what: String,
        /// The dtype it should have had.
        expected: tch::Kind,
        /// The dtype it had.
        got: tch::Kind,
    },

    /// A required file is not there; `fix` says how to get it.
    #[error("missing {what}: {} does not exist. Fix: {fix}", .path.display())]
    Missing {
        /// What is missing.
        what: String,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        fix: String,
    },

    /// A file is there but its content is not what it should be.
    #[error("corrupt {what} {}: {detail}", .path.display())]
    Corrupt {
        /// What the file should be.
        what: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A configuration that cannot work (for example `d_model % n_heads != 0`).
    #[error("invalid config: {0}")]
    Config(String),

    /// Bad input data to a function (empty series, labels that do not match, ...).
    #[error("invalid input: {0}")]
    Input(String),

    /// A plot could not be drawn or encoded.
    #[error("plot: {0}")]
    Plot(String),

    /// An I/O error on a named path.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// An error raised by libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),

    /// A JSON (de)serialisation error.
    #[error(transparent)]
    Json(#[from] serde_json::Error),

    /// An error of the grader (`hw9_grade`): a rejected upload, a missing grading file.
    #[error(transparent)]
    Grade(#[from] hw9_grade::Error),
}

/// `Result` with hw9's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub use hw9_grade::compare::fmt_shape;

/// Checks that `t` has exactly `expected` as its shape.
pub fn expect_shape(what: &str, t: &tch::Tensor, expected: &[i64]) -> Result<()> {
    let got = t.size();
    if got != expected {
        return Err(Error::Shape { what: what.to_string(), expected: expected.to_vec(), got });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_error_reads_like_pytorch() {
        let e = Error::Shape { what: "unpatchify".into(), expected: vec![2, 49, 48], got: vec![2, 48, 49] };
        assert_eq!(e.to_string(), "unpatchify: expected shape (2, 49, 48), got (2, 48, 49)");
        assert_eq!(fmt_shape(&[5]), "(5,)");
        assert_eq!(fmt_shape(&[]), "()");
    }

    #[test]
    fn expect_shape_reports_both_shapes() {
        let t = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        assert!(expect_shape("x", &t, &[2, 3]).is_ok());
        let msg = expect_shape("x", &t, &[3, 2]).unwrap_err().to_string();
        assert_eq!(msg, "x: expected shape (3, 2), got (2, 3)");
    }
}
