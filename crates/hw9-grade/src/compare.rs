//! Comparing an output with its expected value, as the original homework does: shape, then dtype,
//! then the relative error `max |x − y| / max(1e-8, |x| + |y|)` over elements. The notebooks'
//! check cells (through `hw9::grading::check`) and the grader use this one implementation.

use serde::{Deserialize, Serialize};

/// A tensor as the grader sees it: its shape, its dtype's name (libtorch's: `Float`, `Double`,
/// `Int64`, `Bool`, …) and its values as `f64`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// The shape.
    pub shape: Vec<i64>,
    /// The dtype's name.
    pub dtype: String,
    /// The values, flattened row-major.
    pub data: Vec<f64>,
}

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name, e.g. `unpatchify` or `unpatchify/autograder`.
    pub name: String,
    /// Whether every output was within the tolerance.
    pub passed: bool,
    /// The largest relative error, when the outputs could be compared.
    pub rel_error: Option<f64>,
    /// The largest relative error a pass allows.
    pub tolerance: f64,
    /// The line shown to the student (without the ✓/✗ mark).
    pub message: String,
}

impl std::fmt::Display for CheckResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.passed { "✓ PASS" } else { "✗ FAIL" };
        write!(f, "{mark} {}: {}", self.name, self.message)
    }
}

impl CheckResult {
    /// A failed check with its message.
    pub fn failed(name: &str, tolerance: f64, message: String) -> Self {
        CheckResult { name: name.to_string(), passed: false, rel_error: None, tolerance, message }
    }
}

/// Formats a shape as a tuple, the way PyTorch users read it: `(2, 49, 48)`.
pub fn fmt_shape(shape: &[i64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// The original homework's relative error: `max |x − y| / max(1e-8, |x| + |y|)` over elements
/// (0 for no elements; NaN when an element is NaN).
pub fn rel_error(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).fold(0.0, |worst: f64, (a, b)| {
        let e = (a - b).abs() / (a.abs() + b.abs()).max(1e-8);
        if e.is_nan() || worst.is_nan() {
            f64::NAN
        } else {
            worst.max(e)
        }
    })
}

/// Compares one output with its expected value: shape, then dtype, then relative error.
pub fn compare(name: &str, got: &Values, expected: &Values, tolerance: f64) -> CheckResult {
    let fail = |m: String| CheckResult::failed(name, tolerance, m);
    if got.shape != expected.shape || got.data.len() != expected.data.len() {
        return fail(format!("expected shape {}, got {}", fmt_shape(&expected.shape), fmt_shape(&got.shape)));
    }
    if got.dtype != expected.dtype {
        return fail(format!("expected dtype {}, got {}", expected.dtype, got.dtype));
    }
    match rel_error(&got.data, &expected.data) {
        e if e.is_nan() => fail("the output contains NaN".to_string()),
        e if e <= tolerance => CheckResult {
            name: name.to_string(),
            passed: true,
            rel_error: Some(e),
            tolerance,
            message: format!("relative error {e:.2e} <= tolerance {tolerance:.0e}"),
        },
        e => CheckResult { rel_error: Some(e), ..fail(format!("relative error {e:.2e} > tolerance {tolerance:.0e}")) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(shape: &[i64], data: &[f64]) -> Values {
        Values { shape: shape.to_vec(), dtype: "Float".into(), data: data.to_vec() }
    }

    #[test]
    fn shape_then_dtype_then_relative_error() {
        let e = v(&[2], &[1.0, 2.0]);
        assert!(compare("a", &v(&[2], &[1.0, 2.0000001]), &e, 1e-5).passed);
        let r = compare("a", &v(&[1, 2], &[1.0, 2.0]), &e, 1e-5);
        assert_eq!(r.message, "expected shape (2,), got (1, 2)");
        let r = compare("a", &Values { dtype: "Double".into(), ..e.clone() }, &e, 1e-5);
        assert_eq!(r.message, "expected dtype Float, got Double");
        let r = compare("a", &v(&[2], &[1.0, 3.0]), &e, 1e-5);
        assert!(!r.passed && r.message.starts_with("relative error 2.00e-1 >"), "{}", r.message);
        assert_eq!(compare("a", &v(&[2], &[f64::NAN, 2.0]), &e, 1e-5).message, "the output contains NaN");
    }
}
