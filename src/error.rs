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

    /// A file that is missing, unreadable or corrupt: the grader's [`FileError`], one type for
    /// both crates.
    #[error(transparent)]
    File(#[from] FileError),

    /// A configuration that cannot work (for example `d_model % n_heads != 0`).
    #[error("invalid config: {0}")]
    Config(String),

    /// Bad input data to a function (empty series, labels that do not match, ...).
    #[error("invalid input: {0}")]
    Input(String),

    /// A plot could not be drawn or encoded.
    #[error("plot: {0}")]
    Plot(String),

    /// A training run (or an evaluation) stopped between two steps by the notebook's stop button
    /// (or Ctrl-C): [`crate::train::interrupt`].
    #[error("{title}: stopped by the interrupt after {steps} step(s); {resume}")]
    Interrupted {
        /// The run's title.
        title: String,
        /// Steps done so far (trained by this run and the runs it resumed; documents evaluated).
        steps: usize,
        /// Where its state went and how to go on.
        resume: String,
    },

    /// An error raised by libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),

    /// A JSON (de)serialisation error.
    #[error(transparent)]
    Json(#[from] serde_json::Error),

    /// An error of the grader (`hw9_grade`): a rejected upload. (Its file errors become
    /// [`Error::File`], its bad input [`Error::Input`], its JSON errors [`Error::Json`].)
    #[error(transparent)]
    Grade(hw9_grade::Error),
}

/// `Result` with hw9's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::File(FileError::Io { path: path.into(), source })
    }

    /// A required file that is not there, and how to get it.
    pub fn missing(what: impl Into<String>, path: impl Into<PathBuf>, fix: impl Into<String>) -> Self {
        Error::File(FileError::Missing { what: what.into(), path: path.into(), fix: fix.into() })
    }

    /// A file whose content is not what it should be.
    pub fn corrupt(what: impl Into<String>, path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::File(FileError::Corrupt { what: what.into(), path: path.into(), detail: detail.into() })
    }
}

impl From<hw9_grade::Error> for Error {
    /// The grader's errors, flattened: a missing file is [`Error::File`] whichever crate found it.
    fn from(e: hw9_grade::Error) -> Self {
        match e {
            hw9_grade::Error::File(f) => Error::File(f),
            hw9_grade::Error::Input(m) => Error::Input(m),
            hw9_grade::Error::Json(j) => Error::Json(j),
            other => Error::Grade(other),
        }
    }
}

pub use hw9_grade::compare::fmt_shape;
pub use hw9_grade::FileError;

/// Checks that `t` has exactly `expected` as its shape.
pub fn expect_shape(what: &str, t: &tch::Tensor, expected: &[i64]) -> Result<()> {
    let got = t.size();
    if got != expected {
        return Err(Error::Shape { what: what.to_string(), expected: expected.to_vec(), got });
    }
    Ok(())
}

/// A libtorch error inside a panic message, as a student needs it: the operation (when the panic
/// location is in tch's generated wrappers, whose source is read to name the function) and the
/// first line of libtorch's message, without the C++ frames. `None` when `message` is not a
/// libtorch error.
///
/// tch panics with `called `Result::unwrap()` on an `Err` value: Torch("<message>\nException
/// raised from … frame #0 …")`, the message escaped as Rust's `Debug` writes it.
pub fn libtorch_summary(message: &str, location: Option<(&str, u32)>) -> Option<String> {
    let start = message.find("Torch(\"")? + "Torch(\"".len();
    let body = &message[start..];
    let first = body.split("\\n").next().unwrap_or(body).trim_end_matches("\")").replace("\\\"", "\"");
    let op = location.and_then(|(file, line)| tch_function_at(file, line));
    Some(match op {
        Some(op) => format!("libtorch error in `{op}`: {first}"),
        None => format!("libtorch error: {first}"),
    })
}

/// The tch function whose body holds `line` of `file`, when `file` is one of tch's wrappers.
fn tch_function_at(file: &str, line: u32) -> Option<String> {
    if !(file.contains("tch-") && file.contains("wrappers")) {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let lines: Vec<&str> = text.lines().take(line as usize).collect();
    lines.iter().rev().find_map(|l| {
        let l = l.trim_start();
        let rest = l.strip_prefix("pub fn ")?;
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // `f_matmul` is the fallible twin that `matmul` unwraps: name the one the student called.
        Some(name.strip_prefix("f_").map(str::to_string).unwrap_or(name))
    })
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

    #[test]
    fn a_libtorch_panic_becomes_its_operation_and_first_line() {
        let caught = std::panic::catch_unwind(|| {
            tch::Tensor::zeros([1, 2], tch::kind::FLOAT_CPU).matmul(&tch::Tensor::zeros([3, 3], tch::kind::FLOAT_CPU))
        });
        let payload = caught.unwrap_err();
        let msg = payload.downcast_ref::<String>().cloned().unwrap();
        assert!(msg.contains("Exception raised from"), "the raw message has C++ frames: {msg}");
        let s = libtorch_summary(&msg, None).unwrap();
        assert_eq!(s, "libtorch error: mat1 and mat2 shapes cannot be multiplied (1x2 and 3x3)");
        assert_eq!(libtorch_summary("not yet implemented: TODO", None), None);
    }

    #[test]
    fn the_operation_is_read_from_tchs_source() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/error.rs");
        assert_eq!(tch_function_at(file, 10), None, "only tch's wrappers are read");
        let dir = tempfile::tempdir().unwrap();
        let wrappers = dir.path().join("tch-0.26.0/src/wrappers");
        std::fs::create_dir_all(&wrappers).unwrap();
        let gen = wrappers.join("tensor_generated.rs");
        std::fs::write(&gen, "impl Tensor {\n    pub fn f_matmul(&self) {\n        x.unwrap()\n    }\n    pub fn matmul(&self) {\n        self.f_matmul().unwrap()\n    }\n}\n").unwrap();
        assert_eq!(tch_function_at(gen.to_str().unwrap(), 6), Some("matmul".into()));
        assert_eq!(tch_function_at(gen.to_str().unwrap(), 3), Some("matmul".into()));
    }
}
