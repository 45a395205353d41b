//! Comparing an output with its expected value: shape, then dtype, then every element within
//! `atol + rtol·|expected|` (as `torch.testing.assert_close` decides). The notebooks' check cells
//! (through `hw9::grading::check`) and the grader use this one implementation.
//!
//! Why not the original homework's relative error `max |x − y| / max(1e-8, |x| + |y|)`: it is 1.0
//! for any non-zero against an exact zero, so a correct answer that rounds to 2.4e-7 where PyTorch
//! gives 0 (MKL picks its kernels by CPU) failed on one machine and passed on another. That figure
//! is still computed and kept ([`CheckResult::rel_error`]), as information; it decides nothing.
//! The tolerance of each check is in its fixtures (`<check>/atol`, `<check>/rtol`), chosen from
//! the spreads measured across CPUs' kernels (the repository's `tests/checks_across_cpus.rs`;
//! its BENCHMARKS.md, "Checks across CPUs").

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

/// How close each element must be: `|got − expected| ≤ atol + rtol·|expected|`. Integer and
/// boolean outputs (indices, masks) must be equal whatever the tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// The absolute part: what an expected 0 allows.
    pub atol: f64,
    /// The relative part, times `|expected|`.
    pub rtol: f64,
}

impl Tolerance {
    /// `atol` and `rtol`.
    pub fn new(atol: f64, rtol: f64) -> Self {
        Tolerance { atol, rtol }
    }

    /// What one element may differ by.
    pub fn allowed(&self, expected: f64) -> f64 {
        self.atol + self.rtol * expected.abs()
    }

    /// Whether `got` is close enough to `expected`. Where either is not finite they must be equal
    /// (an expected −∞ is met by −∞ alone, not by −1e9 nor +∞; NaN never is).
    pub fn allows(&self, got: f64, expected: f64) -> bool {
        if !got.is_finite() || !expected.is_finite() {
            return got == expected;
        }
        (got - expected).abs() <= self.allowed(expected)
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0e} + {:.0e}·|expected|", self.atol, self.rtol)
    }
}

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name, e.g. `unpatchify`.
    pub name: String,
    /// Whether every output was within the tolerance.
    pub passed: bool,
    /// The largest `|got − expected|` over elements, when the outputs could be compared.
    #[serde(default)]
    pub max_abs_error: Option<f64>,
    /// The original homework's relative error `max |x − y| / max(1e-8, |x| + |y|)`, as
    /// information only (it is 1.0 for any non-zero against a zero).
    pub rel_error: Option<f64>,
    /// The tolerance the comparison used (none for thresholds, or when nothing was compared).
    /// A log written before tolerances had two parts recorded one number here: read as none.
    #[serde(default, deserialize_with = "tolerance_or_legacy_number")]
    pub tolerance: Option<Tolerance>,
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
    pub fn failed(name: &str, tolerance: Option<Tolerance>, message: String) -> Self {
        CheckResult { name: name.to_string(), passed: false, max_abs_error: None, rel_error: None, tolerance, message }
    }
}

/// A tolerance, or the single relative tolerance an earlier log recorded (kept as none: it has no
/// `atol`/`rtol`), so that such a `submission_log.json` still reads.
fn tolerance_or_legacy_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Tolerance>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Two(Tolerance),
        Legacy(#[allow(dead_code)] f64),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        Some(Either::Two(t)) => Some(t),
        Some(Either::Legacy(_)) | None => None,
    })
}

/// Formats a shape as a tuple, the way PyTorch users read it: `(2, 49, 48)`.
pub fn fmt_shape(shape: &[i64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// The position of the `flat`-th element of a row-major tensor of `shape`, as `[i, j, …]`.
pub fn fmt_index(shape: &[i64], flat: usize) -> String {
    let mut rest = flat as i64;
    let mut idx = vec![0i64; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = rest % d;
            rest /= d;
        }
    }
    format!("[{}]", idx.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))
}

/// The original homework's relative error: `max |x − y| / max(1e-8, |x| + |y|)` over elements
/// (0 for no elements; NaN when an element is NaN). Information only: see the module doc.
pub fn rel_error(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).fold(0.0, |worst: f64, (a, b)| {
        let e = if a == b { 0.0 } else { (a - b).abs() / (a.abs() + b.abs()).max(1e-8) };
        if e.is_nan() || worst.is_nan() {
            f64::NAN
        } else {
            worst.max(e)
        }
    })
}

/// Whether a dtype holds integers or booleans (compared exactly).
pub fn is_exact(dtype: &str) -> bool {
    !matches!(dtype, "Float" | "Double" | "Half" | "BFloat16")
}

/// A value as a student reads it: integers whole, small numbers with their significant digits
/// (`3.0000e-6`, not `0.000003`, which would look equal to `0.000000`).
fn number(x: f64, exact: bool) -> String {
    if exact && x.is_finite() {
        format!("{x:.0}")
    } else if x != 0.0 && x.is_finite() && x.abs() < 1e-3 {
        format!("{x:.4e}")
    } else {
        format!("{x:.6}")
    }
}

/// Compares one output with its expected value: shape, then dtype, then NaN and infinities, then
/// every element within `tolerance` (exactly for integer and boolean dtypes). A failure says what
/// was expected and what came, and where.
pub fn compare(name: &str, got: &Values, expected: &Values, tolerance: Tolerance) -> CheckResult {
    let fail = |m: String| CheckResult::failed(name, Some(tolerance), m);
    if got.shape != expected.shape || got.data.len() != expected.data.len() {
        return fail(format!("expected shape {}, got {}", fmt_shape(&expected.shape), fmt_shape(&got.shape)));
    }
    if got.dtype != expected.dtype {
        return fail(format!("expected dtype {}, got {}", expected.dtype, got.dtype));
    }
    let n = got.data.len();
    let where_ = |bad: &dyn Fn(f64, f64) -> bool| -> Option<(usize, usize)> {
        let hits: Vec<usize> = (0..n).filter(|&i| bad(got.data[i], expected.data[i])).collect();
        hits.first().map(|&first| (first, hits.len()))
    };
    if let Some((i, k)) = where_(&|g, e| g.is_nan() && !e.is_nan()) {
        return fail(format!("expected finite numbers, got NaN at {} ({k} of {n} elements)", fmt_index(&got.shape, i)));
    }
    if let Some((i, k)) = where_(&|g, e| g.is_infinite() && e.is_finite()) {
        return fail(format!(
            "expected finite numbers, got {} at {} ({k} of {n} elements)",
            got.data[i],
            fmt_index(&got.shape, i)
        ));
    }
    let exact = is_exact(&expected.dtype);
    let ok = |g: f64, e: f64| if exact { g == e } else { tolerance.allows(g, e) };
    let max_abs = (0..n)
        .filter(|&i| got.data[i] != expected.data[i])
        .map(|i| (got.data[i] - expected.data[i]).abs())
        .fold(0.0, f64::max);
    let rel = rel_error(&got.data, &expected.data);
    let off: Vec<usize> = (0..n).filter(|&i| !ok(got.data[i], expected.data[i])).collect();
    if off.is_empty() {
        let message =
            if exact { "equal".to_string() } else { format!("max |Δ| {max_abs:.1e} within tolerance {tolerance}") };
        return CheckResult {
            name: name.to_string(),
            passed: true,
            max_abs_error: Some(max_abs),
            rel_error: Some(rel),
            tolerance: Some(tolerance),
            message,
        };
    }
    // The worst element: the one furthest beyond what it is allowed.
    let excess = |i: usize| {
        let (g, e) = (got.data[i], expected.data[i]);
        if exact {
            (g - e).abs()
        } else {
            (g - e).abs() / tolerance.allowed(e).max(f64::MIN_POSITIVE)
        }
    };
    let worst = off.iter().copied().fold(off[0], |w, i| if excess(i) > excess(w) { i } else { w });
    let (g, e) = (got.data[worst], expected.data[worst]);
    let how =
        if exact { String::new() } else { format!(" (|Δ| {:.1e} > {:.1e})", (g - e).abs(), tolerance.allowed(e)) };
    CheckResult {
        max_abs_error: Some(max_abs),
        rel_error: Some(rel),
        ..fail(format!(
            "{} of {n} elements differ{}; at {}: expected {}, got {}{how}",
            off.len(),
            if exact { "".to_string() } else { format!(" beyond {tolerance}") },
            fmt_index(&got.shape, worst),
            number(e, exact),
            number(g, exact),
        ))
    }
}

/// Compares several outputs (a tuple a TODO returns) with their expected values, one by one: the
/// first that fails names itself (`output 1: …`); when all pass, the largest error is reported.
pub fn compare_all(name: &str, got: &[&Values], expected: &[&Values], tolerance: Tolerance) -> CheckResult {
    if got.len() != expected.len() {
        return CheckResult::failed(
            name,
            Some(tolerance),
            format!("expected {} outputs, got {}", expected.len(), got.len()),
        );
    }
    let each: Vec<CheckResult> = got.iter().zip(expected).map(|(g, e)| compare(name, g, e, tolerance)).collect();
    if let Some((i, bad)) = each.iter().enumerate().find(|(_, r)| !r.passed) {
        let message = if each.len() > 1 { format!("output {i}: {}", bad.message) } else { bad.message.clone() };
        return CheckResult { message, ..bad.clone() };
    }
    let max_of = |f: fn(&CheckResult) -> Option<f64>| {
        each.iter().filter_map(f).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    };
    let max_abs = max_of(|r| r.max_abs_error);
    let float_outputs = expected.iter().any(|e| !is_exact(&e.dtype));
    let message = match (float_outputs, max_abs) {
        (true, Some(m)) => format!("max |Δ| {m:.1e} within tolerance {tolerance}"),
        _ => "equal".to_string(),
    };
    CheckResult {
        name: name.to_string(),
        passed: true,
        max_abs_error: max_abs,
        rel_error: max_of(|r| r.rel_error),
        tolerance: Some(tolerance),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(shape: &[i64], data: &[f64]) -> Values {
        Values { shape: shape.to_vec(), dtype: "Float".into(), data: data.to_vec() }
    }

    const TOL: Tolerance = Tolerance { atol: 1e-6, rtol: 1e-5 };

    #[test]
    fn shape_then_dtype_then_elements() {
        let e = v(&[2], &[1.0, 2.0]);
        assert!(compare("a", &v(&[2], &[1.0, 2.00001]), &e, TOL).passed);
        let r = compare("a", &v(&[1, 2], &[1.0, 2.0]), &e, TOL);
        assert_eq!(r.message, "expected shape (2,), got (1, 2)");
        let r = compare("a", &v(&[0], &[]), &e, TOL);
        assert_eq!(r.message, "expected shape (2,), got (0,)");
        let r = compare("a", &Values { dtype: "Double".into(), ..e.clone() }, &e, TOL);
        assert_eq!(r.message, "expected dtype Float, got Double");
        let r = compare("a", &v(&[2], &[1.0, 3.0]), &e, TOL);
        assert!(!r.passed);
        assert_eq!(r.message, "1 of 2 elements differ beyond 1e-6 + 1e-5·|expected|; at [1]: expected 2.000000, got 3.000000 (|Δ| 1.0e0 > 2.1e-5)");
        assert_eq!(r.max_abs_error, Some(1.0));
    }

    #[test]
    fn a_tiny_non_zero_against_an_exact_zero_passes_where_the_original_formula_failed() {
        // The 2.4e-7 an AMD EPYC's MKL kernels leave on a distance matrix's diagonal.
        let e = v(&[2, 2], &[0.0, 1.5, 1.5, 0.0]);
        let g = v(&[2, 2], &[2.4e-7, 1.5, 1.5, 0.0]);
        let r = compare("pairwise_distances", &g, &e, TOL);
        assert!(r.passed, "{r}");
        assert_eq!(r.rel_error, Some(1.0), "the original figure, kept as information");
        assert_eq!(r.message, "max |Δ| 2.4e-7 within tolerance 1e-6 + 1e-5·|expected|");
        // ... and a real error at the same place still fails.
        let r = compare("pairwise_distances", &v(&[2, 2], &[0.01, 1.5, 1.5, 0.0]), &e, TOL);
        assert!(!r.passed && r.message.contains("at [0, 0]: expected 0.000000, got 0.010000"), "{r}");
    }

    #[test]
    fn nan_and_infinities_are_named_with_where() {
        let e = v(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let r = compare("a", &v(&[2, 2], &[1.0, 2.0, f64::NAN, f64::NAN]), &e, TOL);
        assert_eq!(r.message, "expected finite numbers, got NaN at [1, 0] (2 of 4 elements)");
        let r = compare("a", &v(&[2, 2], &[1.0, f64::NEG_INFINITY, 3.0, 4.0]), &e, TOL);
        assert_eq!(r.message, "expected finite numbers, got -inf at [0, 1] (1 of 4 elements)");
        // Equal infinities are equal (a masked score), as in torch.testing.assert_close; an
        // expected infinity is met by that infinity alone.
        let inf = v(&[1], &[f64::NEG_INFINITY]);
        assert!(compare("a", &inf, &inf, TOL).passed);
        let wide = Tolerance::new(1.0, 1.0);
        for got in [-1e9, f64::INFINITY, 0.0] {
            assert!(!compare("a", &v(&[1], &[got]), &inf, wide).passed, "{got} passed for -inf");
        }
    }

    #[test]
    fn small_values_show_their_digits() {
        let r = compare("a", &v(&[1], &[3e-6]), &v(&[1], &[0.0]), TOL);
        assert_eq!(r.message, "1 of 1 elements differ beyond 1e-6 + 1e-5·|expected|; at [0]: expected 0.000000, got 3.0000e-6 (|Δ| 3.0e-6 > 1.0e-6)");
    }

    #[test]
    fn a_log_written_with_one_number_as_its_tolerance_still_reads() {
        let old = r#"{"name": "mse", "passed": true, "rel_error": 1e-7, "tolerance": 1e-5, "message": "relative error 1.00e-7 <= tolerance 1e-5"}"#;
        let r: CheckResult = serde_json::from_str(old).unwrap();
        assert_eq!((r.tolerance, r.max_abs_error, r.passed), (None, None, true));
        let new = r#"{"name": "mse", "passed": true, "rel_error": null, "tolerance": {"atol": 1e-6, "rtol": 1e-5}, "message": ""}"#;
        assert_eq!(serde_json::from_str::<CheckResult>(new).unwrap().tolerance, Some(Tolerance::new(1e-6, 1e-5)));
    }

    #[test]
    fn integers_and_booleans_must_be_equal() {
        let ids = |d: &[f64]| Values { shape: vec![3], dtype: "Int64".into(), data: d.to_vec() };
        assert_eq!(compare("ids", &ids(&[0.0, 2.0, 1.0]), &ids(&[0.0, 2.0, 1.0]), TOL).message, "equal");
        let wide = Tolerance::new(10.0, 1.0);
        let r = compare("ids", &ids(&[0.0, 1.0, 2.0]), &ids(&[0.0, 2.0, 1.0]), wide);
        assert!(!r.passed);
        assert_eq!(r.message, "2 of 3 elements differ; at [1]: expected 2, got 1");
    }

    #[test]
    fn indices_unravel_row_major() {
        assert_eq!(fmt_index(&[2, 3, 4], 0), "[0, 0, 0]");
        assert_eq!(fmt_index(&[2, 3, 4], 23), "[1, 2, 3]");
        assert_eq!(fmt_index(&[2, 3, 4], 13), "[1, 0, 1]");
        assert_eq!(fmt_index(&[], 0), "[]");
    }
}
