//! Grading the notebooks' TODO cells: reference fixtures, checks, and a recorder of graded outputs.
//!
//! A check runs the student's code on a fixture's **public** inputs and compares the result with
//! the expected output using the original homework's relative error,
//! `max |x − y| / max(1e-8, |x| + |y|)`, printing one pass/fail line. The same code then runs on
//! the **autograder** inputs; those outputs go into the submission (see [`crate::grading::submission`])
//! and `hw9 grade` compares them with the reference.
//!
//! A `todo!()` left in a TODO cell panics; inside evcxr a panic does not fail the cell, so the
//! check catches it and reports "not implemented yet" as a failure, and the notebook goes on.
//!
//! Fixture files are `assets/fixtures/<notebook>.safetensors`, written by `tools/gen_fixtures.py`
//! with PyTorch's own modules. Keys: `<check>/tolerance`, `<check>/<case>/<input name>` and
//! `<check>/<case>/expected` (or `expected.0`, `expected.1`, ... for several outputs), where
//! `<case>` is `public` or `autograder`.
//!
//! (Over 400 lines: about 100 of them are its unit tests, kept beside the code they test.)

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use serde::Serialize;
use tch::{Kind, Tensor};

pub use super::fixtures::{Case, Fixtures, FIXTURES_FIX};
use crate::error::{Error, Result};
pub use hw9_grade::compare::{CheckResult, Values};
pub use hw9_grade::log::ThresholdRecord;

/// The original homework's relative error: `max |x − y| / max(1e-8, |x| + |y|)` over elements.
/// Shapes must be equal (no broadcasting).
pub fn rel_error(x: &Tensor, y: &Tensor) -> Result<f64> {
    if x.size() != y.size() {
        return Err(Error::Shape { what: "rel_error".into(), expected: y.size(), got: x.size() });
    }
    Ok(hw9_grade::compare::rel_error(&values(x)?.data, &values(y)?.data))
}

/// A tensor as the grader sees it: shape, libtorch's dtype name, values as `f64`.
pub fn values(t: &Tensor) -> Result<Values> {
    let flat = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).reshape([-1]);
    Ok(Values { shape: t.size(), dtype: format!("{:?}", t.kind()), data: Vec::<f64>::try_from(&flat)? })
}

/// Compares one output with its expected value: shape, then dtype, then relative error (the
/// grader's own comparison, [`hw9_grade::compare::compare`]).
pub fn compare(name: &str, got: &Tensor, expected: &Tensor, tolerance: f64) -> CheckResult {
    match (values(got), values(expected)) {
        (Ok(g), Ok(e)) => hw9_grade::compare::compare(name, &g, &e, tolerance),
        (Err(err), _) | (_, Err(err)) => CheckResult::failed(name, tolerance, err.to_string()),
    }
}

/// What a student's function may return to a check: one tensor, a tuple of them, a `Vec`, or a
/// `Result` of those.
pub trait Outputs {
    /// The outputs in order, or why there are none.
    fn into_outputs(self) -> std::result::Result<Vec<Tensor>, String>;
}

impl Outputs for Tensor {
    fn into_outputs(self) -> std::result::Result<Vec<Tensor>, String> {
        Ok(vec![self])
    }
}

impl Outputs for Vec<Tensor> {
    fn into_outputs(self) -> std::result::Result<Vec<Tensor>, String> {
        Ok(self)
    }
}

impl Outputs for (Tensor, Tensor) {
    fn into_outputs(self) -> std::result::Result<Vec<Tensor>, String> {
        Ok(vec![self.0, self.1])
    }
}

impl Outputs for (Tensor, Tensor, Tensor) {
    fn into_outputs(self) -> std::result::Result<Vec<Tensor>, String> {
        Ok(vec![self.0, self.1, self.2])
    }
}

impl<T: Outputs, E: std::fmt::Display> Outputs for std::result::Result<T, E> {
    fn into_outputs(self) -> std::result::Result<Vec<Tensor>, String> {
        self.map_err(|e| format!("returned an error: {e}"))?.into_outputs()
    }
}

thread_local! {
    /// Set while [`catch`] runs on this thread: its panics are reported, not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last quiet panic on this thread happened (file, line): names a libtorch operation.
    static QUIET_AT: std::cell::RefCell<Option<(String, u32)>> = const { std::cell::RefCell::new(None) };
}

/// Wraps the panic hook once so that it stays silent on a thread inside [`catch`] and behaves as
/// before everywhere else (swapping the global hook per call would race between threads).
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let at = info.location().map(|l| (l.file().to_string(), l.line()));
                QUIET_AT.with(|q| *q.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, catching a panic (a `todo!()` or a libtorch error) without printing it.
pub fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_quiet_hook();
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        match msg.strip_prefix("not yet implemented") {
            Some(rest) => {
                let hint = rest.trim_start_matches(':').trim();
                if hint.is_empty() {
                    "not implemented yet".to_string()
                } else {
                    format!("not implemented yet ({hint})")
                }
            }
            None => {
                let at = QUIET_AT.with(|q| q.borrow_mut().take());
                match crate::error::libtorch_summary(&msg, at.as_ref().map(|(f, l)| (f.as_str(), *l))) {
                    Some(summary) => format!("your code panicked: {summary}"),
                    None => format!("your code panicked: {msg}"),
                }
            }
        }
    })
}

/// Runs `f` and reports why it produced no outputs, if it did not.
fn run_outputs<O: Outputs>(f: impl FnOnce() -> O) -> std::result::Result<Vec<Tensor>, String> {
    catch(f).and_then(Outputs::into_outputs)
}

/// Runs `f` on a case and compares each output with the case's expected ones.
pub fn check_case<O: Outputs>(name: &str, case: &Case, f: impl FnOnce(&Case) -> O) -> CheckResult {
    let tol = case.tolerance;
    let expected = case.expected();
    if expected.is_empty() {
        return CheckResult::failed(
            name,
            tol,
            format!("fixture case {} has no expected output; regenerate it: {FIXTURES_FIX}", case.label),
        );
    }
    let got = match run_outputs(|| f(case)) {
        Ok(got) => got,
        Err(why) => return CheckResult::failed(name, tol, why),
    };
    if got.len() != expected.len() {
        return CheckResult::failed(name, tol, format!("expected {} outputs, got {}", expected.len(), got.len()));
    }
    let results: Vec<CheckResult> = got
        .iter()
        .zip(&expected)
        .enumerate()
        .map(|(i, (g, e))| {
            let label = if expected.len() > 1 { format!("{name} output {i}") } else { name.to_string() };
            compare(&label, g, e, tol)
        })
        .collect();
    match results.iter().find(|r| !r.passed) {
        Some(bad) => CheckResult { name: name.to_string(), ..bad.clone() },
        None => {
            let worst = results.iter().filter_map(|r| r.rel_error).fold(0.0, f64::max);
            CheckResult {
                name: name.to_string(),
                passed: true,
                rel_error: Some(worst),
                tolerance: tol,
                message: format!("relative error {worst:.2e} <= tolerance {tol:.0e}"),
            }
        }
    }
}

/// What a notebook graded: check results, the outputs on autograder inputs, and named values.
#[derive(Debug, Default)]
pub struct Recorder {
    pub(crate) notebook: String,
    pub(crate) results: Vec<CheckResult>,
    pub(crate) outputs: Vec<(String, Tensor)>,
    pub(crate) missing: BTreeMap<String, String>,
    pub(crate) values: BTreeMap<String, serde_json::Value>,
    pub(crate) thresholds: BTreeMap<String, ThresholdRecord>,
    pub(crate) profile: String,
}

impl Recorder {
    /// A recorder for the notebook `notebook` (its file stem, e.g. `"00_setup_check"`).
    /// The profile recorded is `HW9_PROFILE`'s (what the notebook runs in).
    pub fn new(notebook: &str) -> Self {
        let profile = crate::profile::Profile::from_env().map(|p| p.to_string()).unwrap_or_else(|e| e.to_string());
        Recorder { notebook: notebook.to_string(), profile, ..Default::default() }
    }

    /// The same recorder, recording `profile` as the one the notebook ran in (for tests and tools
    /// that do not run under `HW9_PROFILE`).
    pub fn with_profile(self, profile: crate::profile::Profile) -> Self {
        Recorder { profile: profile.to_string(), ..self }
    }

    /// The notebook's name.
    pub fn notebook(&self) -> &str {
        &self.notebook
    }

    /// Checks the student's `f` against the public case of `check`, prints the pass/fail line and
    /// keeps it; then runs `f` on the autograder case and records its outputs for the submission.
    /// Returns whether the public check passed.
    pub fn check<O: Outputs>(&mut self, fixtures: &Fixtures, check: &str, f: impl Fn(&Case) -> O) -> bool {
        let result = match fixtures.case(check, "public") {
            Ok(case) => check_case(check, &case, &f),
            Err(e) => CheckResult::failed(check, f64::NAN, e.to_string()),
        };
        println!("{result}");
        let passed = result.passed;
        self.results.retain(|r| r.name != check);
        self.results.push(result);
        self.outputs.retain(|(n, _)| n != check && !n.starts_with(&format!("{check}.")));
        self.missing.remove(check);
        match fixtures.case(check, "autograder").map(|case| run_outputs(|| f(&case))) {
            Ok(Ok(outs)) if outs.len() == 1 => {
                self.outputs.push((check.to_string(), outs[0].detach().to_device(tch::Device::Cpu)))
            }
            Ok(Ok(outs)) => {
                for (i, t) in outs.iter().enumerate() {
                    self.outputs.push((format!("{check}.{i}"), t.detach().to_device(tch::Device::Cpu)));
                }
            }
            Ok(Err(why)) => {
                self.missing.insert(check.to_string(), why);
            }
            Err(e) => {
                self.missing.insert(check.to_string(), e.to_string());
            }
        }
        passed
    }

    /// A graded threshold, like the original's `check_acc`: prints `✓ PASS`/`✗ FAIL` for
    /// `value >= threshold` and records the number under `name` for the submission, where the
    /// grader compares it with its own threshold (and ignores runs in a non-grading profile).
    /// Returns whether it passed.
    pub fn at_least(&mut self, name: &str, title: &str, value: f64, threshold: f64) -> bool {
        self.threshold(name, title, value, threshold, check_at_least(title, value, threshold))
    }

    /// Like [`Recorder::at_least`] for a number that must stay low (a loss): `value <= threshold`.
    pub fn at_most(&mut self, name: &str, title: &str, value: f64, threshold: f64) -> bool {
        self.threshold(name, title, value, threshold, check_at_most(title, value, threshold))
    }

    fn threshold(&mut self, name: &str, title: &str, value: f64, threshold: f64, checked: CheckResult) -> bool {
        self.thresholds.insert(name.to_string(), ThresholdRecord { title: title.to_string(), value, threshold });
        checked.passed
    }

    /// Records a named value for the submission (a final accuracy, a loss curve, ...).
    pub fn value(&mut self, name: &str, value: impl Serialize) -> Result<()> {
        self.values.insert(name.to_string(), serde_json::to_value(value)?);
        Ok(())
    }

    /// The check results so far.
    pub fn results(&self) -> &[CheckResult] {
        &self.results
    }

    /// Prints a summary line: how many checks passed.
    pub fn summary(&self) -> String {
        let passed = self.results.iter().filter(|r| r.passed).count();
        format!("{passed}/{} checks passed", self.results.len())
    }
}

/// A check of a threshold, like the original's `check_acc`: prints and returns pass/fail.
pub fn check_at_least(name: &str, value: f64, threshold: f64) -> CheckResult {
    check_threshold(name, value, threshold, value >= threshold, [">=", "<"])
}

/// A check that a number stays at most `threshold` (a loss): prints and returns pass/fail.
pub fn check_at_most(name: &str, value: f64, threshold: f64) -> CheckResult {
    check_threshold(name, value, threshold, value <= threshold, ["<=", ">"])
}

fn check_threshold(name: &str, value: f64, threshold: f64, passed: bool, [ok, not]: [&str; 2]) -> CheckResult {
    let cmp = if passed { ok } else { not };
    let r = CheckResult {
        name: name.to_string(),
        passed,
        rel_error: None,
        tolerance: threshold,
        message: format!("{value:.4} {cmp} {threshold}"),
    };
    println!("{r}");
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use tch::Device;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    #[test]
    fn rel_error_matches_the_original_formula() {
        let x = t(&[1.0, 2.0, 0.0], &[3]);
        let y = t(&[1.0, 2.2, 0.0], &[3]);
        // |2 - 2.2| / (2 + 2.2) = 0.047619...; the zero pair gives 0 / 1e-8 = 0.
        assert!((rel_error(&x, &y).unwrap() - 0.2 / 4.2).abs() < 1e-6);
        assert!(rel_error(&x, &t(&[1.0, 2.0], &[2])).is_err());
    }

    #[test]
    fn compare_reports_shape_and_dtype_like_the_homework() {
        let exp = Tensor::zeros([2, 49, 48], (Kind::Float, Device::Cpu));
        let got = Tensor::zeros([2, 48, 49], (Kind::Float, Device::Cpu));
        let r = compare("unpatchify", &got, &exp, 1e-3);
        assert!(!r.passed);
        assert_eq!(r.to_string(), "✗ FAIL unpatchify: expected shape (2, 49, 48), got (2, 48, 49)");
        let r = compare("x", &exp.to_kind(Kind::Double), &exp, 1e-3);
        assert_eq!(r.message, "expected dtype Float, got Double");
        let r = compare("x", &(&exp + 1.0), &(&exp + 1.0001), 1e-3);
        assert!(r.passed, "{r}");
        assert!(r.to_string().starts_with("✓ PASS x: relative error 5.00e-5"), "{r}");
        let r = compare("x", &(&exp + f64::NAN), &exp, 1e-3);
        assert_eq!(r.message, "the output contains NaN");
    }

    #[test]
    fn catch_turns_todo_into_not_implemented_and_keeps_the_hint() {
        let r: std::result::Result<Tensor, String> = catch(|| todo!("TODO: patchify, then transpose"));
        assert_eq!(r.unwrap_err(), "not implemented yet (TODO: patchify, then transpose)");
        let r = catch(|| {
            Tensor::zeros([2], (Kind::Float, Device::Cpu)).matmul(&Tensor::zeros([3], (Kind::Float, Device::Cpu)))
        });
        let err = r.unwrap_err();
        assert!(err.starts_with("your code panicked: libtorch error in `matmul`: "), "{err}");
        assert!(!err.contains("Exception raised from") && !err.contains("frame #"), "{err}");
    }

    fn fixture_file(dir: &Path) -> PathBuf {
        let path = dir.join("nb.safetensors");
        let x = t(&[1.0, 2.0, 3.0], &[3]);
        let tensors = [
            ("double/tolerance", Tensor::from(1e-3f64)),
            ("double/public/x", x.shallow_clone()),
            ("double/public/expected", &x * 2.0),
            ("double/autograder/x", &x + 10.0),
            ("double/autograder/expected", (&x + 10.0) * 2.0),
            ("pair/tolerance", Tensor::from(1e-3f64)),
            ("pair/public/x", x.shallow_clone()),
            ("pair/public/expected.0", &x + 1.0),
            ("pair/public/expected.1", &x - 1.0),
            ("pair/autograder/x", x.shallow_clone()),
            ("pair/autograder/expected.0", &x + 1.0),
            ("pair/autograder/expected.1", &x - 1.0),
        ];
        Tensor::write_safetensors(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn recorder_checks_public_cases_and_records_autograder_outputs() {
        let dir = std::env::temp_dir().join(format!("hw9-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fx = Fixtures::load_from("nb", &fixture_file(&dir)).unwrap();
        assert_eq!(fx.checks(), vec!["double", "pair"]);
        let mut rec = Recorder::new("nb");
        assert!(rec.check(&fx, "double", |c| &c["x"] * 2.0));
        assert!(rec.check(&fx, "pair", |c| (&c["x"] + 1.0, &c["x"] - 1.0)));
        assert_eq!(rec.outputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["double", "pair.0", "pair.1"]);
        assert_eq!(Vec::<f32>::try_from(&rec.outputs[0].1).unwrap(), [22.0, 24.0, 26.0]);
        // A TODO fails the check and leaves no output, and a wrong answer fails with its error.
        assert!(!rec.check(&fx, "double", |_| -> Tensor { todo!("TODO: multiply by two") }));
        assert_eq!(rec.results().last().unwrap().message, "not implemented yet (TODO: multiply by two)");
        assert_eq!(rec.missing["double"], "not implemented yet (TODO: multiply by two)");
        assert!(!rec.check(&fx, "double", |c| &c["x"] * 3.0));
        assert_eq!(rec.summary(), "1/2 checks passed");
        // A missing input name is reported, not a crash.
        assert!(!rec.check(&fx, "double", |c| c["y"].shallow_clone()));
        assert!(rec.results().last().unwrap().message.contains("has no input \"y\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_corrupt_fixtures_name_the_file_and_the_fix() {
        let err = Fixtures::load_from("nb", Path::new("/nonexistent/nb.safetensors")).unwrap_err().to_string();
        assert!(err.contains("missing fixtures for nb") && err.contains("make fixtures"), "{err}");
        let dir = std::env::temp_dir().join(format!("hw9-check-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bad.safetensors"), b"not a safetensors file").unwrap();
        let err = Fixtures::load_from("nb", &dir.join("bad.safetensors")).unwrap_err().to_string();
        assert!(err.starts_with("corrupt fixture file") && err.contains("make fixtures"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
