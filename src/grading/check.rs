//! Grading the notebooks' TODO cells: reference fixtures, checks, and a recorder of graded outputs.
//!
//! A check runs the student's code on a fixture's **public** inputs (one case or several, each
//! shown in the notebook) and compares the result with the expected output, element by element
//! within the check's tolerance `atol + rtol·|expected|` (see [`hw9_grade::compare`]: the grader
//! uses the same comparison), printing one pass/fail line. The same code then runs on the
//! **autograder** inputs; those outputs go into the submission (see
//! [`crate::grading::submission`]) and `hw9 grade` compares them with the reference. When the code
//! panics there, or returns a wrong shape, dtype or a NaN, the check line says so at once instead
//! of a silent pass: the student handout ships each graded output's shape and dtype (not its
//! values).
//!
//! A `todo!()` left in a TODO cell panics; inside evcxr a panic does not fail the cell, so the
//! check catches it and reports "not implemented yet" as a failure, and the notebook goes on.
//!
//! Fixture files are `assets/fixtures/<notebook>.safetensors`, written by `tools/gen_fixtures.py`
//! with PyTorch's own modules (layout: [`crate::grading::fixtures`]).
//!
//! (Over 400 lines: about 150 of them are its unit tests, kept beside the code they test.)

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use serde::Serialize;
use tch::{Kind, Tensor};

pub use super::fixtures::{Case, Fixtures, Tolerance, FIXTURES_FIX};
use crate::error::{Error, Result};
pub use hw9_grade::compare::{CheckResult, Values};
pub use hw9_grade::log::ThresholdRecord;

/// The original homework's relative error: `max |x − y| / max(1e-8, |x| + |y|)` over elements,
/// as information (it is 1.0 for any non-zero against a zero, so it decides nothing here).
/// Shapes must be equal (no broadcasting).
pub fn rel_error(x: &Tensor, y: &Tensor) -> Result<f64> {
    if x.size() != y.size() {
        return Err(Error::Shape { what: "rel_error".into(), expected: y.size(), got: x.size() });
    }
    Ok(hw9_grade::compare::rel_error(&values(x)?.data, &values(y)?.data))
}

/// A tensor as the grader sees it: shape, libtorch's dtype name, values as `f64`.
pub fn values(t: &Tensor) -> Result<Values> {
    if !t.defined() {
        return Err(Error::Input("expected a tensor, got an undefined one (Tensor::new())".into()));
    }
    let flat = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).reshape([-1]);
    Ok(Values { shape: t.size(), dtype: format!("{:?}", t.kind()), data: Vec::<f64>::try_from(&flat)? })
}

/// Compares one output with its expected value: shape, then dtype, then every element within
/// `tolerance` (the grader's own comparison, [`hw9_grade::compare::compare`]).
pub fn compare(name: &str, got: &Tensor, expected: &Tensor, tolerance: Tolerance) -> CheckResult {
    match (values(got), values(expected)) {
        (Ok(g), Ok(e)) => hw9_grade::compare::compare(name, &g, &e, tolerance),
        (Err(err), _) | (_, Err(err)) => CheckResult::failed(name, Some(tolerance), err.to_string()),
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
            Some(tol),
            format!("fixture case {} has no expected output; regenerate it: {FIXTURES_FIX}", case.label),
        );
    }
    let got = match run_outputs(|| f(case)) {
        Ok(got) => got,
        Err(why) => return CheckResult::failed(name, Some(tol), why),
    };
    let as_values = |ts: &[&Tensor]| ts.iter().map(|t| values(t)).collect::<Result<Vec<Values>>>();
    match (as_values(&got.iter().collect::<Vec<_>>()), as_values(&expected)) {
        (Ok(g), Ok(e)) => {
            hw9_grade::compare::compare_all(name, &g.iter().collect::<Vec<_>>(), &e.iter().collect::<Vec<_>>(), tol)
        }
        (Err(err), _) | (_, Err(err)) => CheckResult::failed(name, Some(tol), err.to_string()),
    }
}

/// Runs `f` on every public case of `check` (the notebook's cases) and combines them into one
/// result: the first failing case (named when there are several), else the largest error.
pub fn check_public<O: Outputs>(fixtures: &Fixtures, check: &str, f: &impl Fn(&Case) -> O) -> CheckResult {
    let names = fixtures.public_cases(check);
    if names.is_empty() {
        let why = format!("the fixtures have no public case of {check:?}; they have checks {:?}", fixtures.checks());
        return CheckResult::failed(check, None, why);
    }
    let mut results = Vec::new();
    for case in &names {
        let r = match fixtures.case(check, case) {
            Ok(c) => check_case(check, &c, f),
            Err(e) => CheckResult::failed(check, None, e.to_string()),
        };
        if !r.passed {
            // The first case needs no name; a later one says which (e.g. `public_padded case: …`).
            return if case != &names[0] {
                CheckResult { message: format!("{case} case: {}", r.message), ..r }
            } else {
                r
            };
        }
        results.push(r);
    }
    let worst = results
        .iter()
        .max_by(|a, b| a.max_abs_error.partial_cmp(&b.max_abs_error).unwrap_or(std::cmp::Ordering::Equal))
        .cloned()
        .unwrap_or_else(|| results[0].clone());
    if names.len() > 1 {
        CheckResult { message: format!("{} public cases, {}", names.len(), worst.message), ..worst }
    } else {
        worst
    }
}

/// What is wrong with outputs computed on a graded case, from what the case says they must look
/// like (shapes and dtypes; their values are the grader's): `None` when nothing is seen wrong.
pub fn graded_problem(case: &Case, got: &[Tensor]) -> Option<String> {
    let want = case.expected_shapes();
    if want.is_empty() {
        return None;
    }
    if got.len() != want.len() {
        return Some(format!("your code returned {} outputs, expected {}", got.len(), want.len()));
    }
    for (i, (g, (shape, kind))) in got.iter().zip(&want).enumerate() {
        let which = if want.len() > 1 { format!("output {i}: ") } else { String::new() };
        if !g.defined() {
            return Some(format!("{which}expected a tensor, got an undefined one"));
        }
        if &g.size() != shape {
            return Some(format!(
                "{which}expected shape {}, got {}",
                crate::error::fmt_shape(shape),
                crate::error::fmt_shape(&g.size())
            ));
        }
        if g.kind() != *kind {
            return Some(format!("{which}expected dtype {kind:?}, got {:?}", g.kind()));
        }
        // Every expected output is finite (tools/gen_fixtures.py asserts it): a NaN or an
        // infinity is wrong whatever the values.
        if g.is_floating_point() && g.numel() > 0 && g.isfinite().all().int64_value(&[]) == 0 {
            return Some(format!("{which}expected finite numbers, got NaN or infinity"));
        }
    }
    None
}

/// A check's outputs as the submission names them: `<check>` for one, `<check>.<i>` for several;
/// detached, on the CPU.
fn named_outputs(check: &str, outs: &[Tensor]) -> Vec<(String, Tensor)> {
    let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu);
    match outs {
        [one] => vec![(check.to_string(), cpu(one))],
        _ => outs.iter().enumerate().map(|(i, t)| (format!("{check}.{i}"), cpu(t))).collect(),
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
    /// Set when the grader runs the notebook's TODO cells ([`Recorder::for_grader`]): the checks
    /// not to run again.
    pub(crate) grader: Option<std::collections::BTreeSet<String>>,
    /// Trained weights for the submission, by model ([`Recorder::weights`]).
    pub(crate) weights: BTreeMap<String, Vec<(String, Tensor)>>,
}

/// A model's name in the submission (`weights/<name>.safetensors`): letters, digits and `_`.
fn check_model_name(model: &str) -> Result<()> {
    if model.is_empty() || model.len() > 64 || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Input(format!(
            "a model's name for the submission must be 1–64 letters, digits or '_', got {model:?}"
        )));
    }
    Ok(())
}

/// The lines a recorder in the grader's harness prints.
pub use hw9_grade::harness::lines as grader_lines;

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

    /// The recorder of the grader's harness (`hw9_grade::harness`): each check runs the student's
    /// code on the graded case only (the fixtures the grader hands it), and prints its outputs to
    /// stdout as [`grader_lines`]; the checks named in `HW9_GRADE_SKIP` (comma-separated: done in
    /// an earlier run of the harness, or the one that crashed it) do not run.
    pub fn for_grader(notebook: &str) -> Result<Self> {
        let skip = std::env::var("HW9_GRADE_SKIP").unwrap_or_default();
        let skip = skip.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
        Ok(Recorder {
            notebook: notebook.to_string(),
            profile: "grader".into(),
            grader: Some(skip),
            ..Default::default()
        })
    }

    /// Ends a grader's run ([`Recorder::for_grader`]): prints `HW9-GRADE-END`. Nothing otherwise.
    pub fn finish(&self) -> Result<()> {
        if self.grader.is_some() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "\n{}", grader_lines::END)
                .and_then(|_| out.flush())
                .map_err(|e| Error::Input(e.to_string()))?;
        }
        Ok(())
    }

    /// A check in the grader's harness: the graded case only, its outputs printed.
    fn grader_check<O: Outputs>(&mut self, fixtures: &Fixtures, check: &str, f: impl Fn(&Case) -> O) -> bool {
        self.grader_output(check, || {
            let case = fixtures.case(check, "autograder").map_err(|e| e.to_string())?;
            let outs = run_outputs(|| f(&case))?;
            if outs.iter().any(|t| !t.defined()) {
                return Err("an output was an undefined tensor".to_string());
            }
            Ok(named_outputs(check, &outs))
        })
    }

    /// In the grader's harness ([`Recorder::for_grader`]): runs `f` (catching a panic) and prints
    /// its named tensors as `name`'s output, or why it failed, as [`grader_lines`]; skipped when
    /// `HW9_GRADE_SKIP` names it. Outside the grader's harness it does nothing and returns false.
    /// The grader's measurement of submitted models (`hw9::tasks::measure`) reports through it.
    pub fn grader_output(
        &mut self,
        name: &str,
        f: impl FnOnce() -> std::result::Result<Vec<(String, Tensor)>, String>,
    ) -> bool {
        use std::io::Write;
        match &self.grader {
            Some(skip) if !skip.contains(name) => {}
            _ => return false,
        }
        let say = |line: String| {
            let mut out = std::io::stdout().lock();
            // A line of its own even after a student's print without a newline.
            let _ = writeln!(out, "\n{line}").and_then(|_| out.flush());
        };
        say(format!("{} {name}", grader_lines::BEGIN));
        let outcome = catch(f)
            .and_then(|r| r)
            .and_then(|named| crate::grading::submission::safetensors_bytes(&named).map_err(|e| e.to_string()));
        match outcome {
            Ok(bytes) => {
                use base64::Engine;
                say(format!(
                    "{} {name} {}",
                    grader_lines::OUTPUT,
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ));
                true
            }
            Err(why) => {
                say(format!("{} {name} {}", grader_lines::FAILED, why.replace(['\n', '\r'], " ")));
                false
            }
        }
    }

    /// Records the trained weights of `vs` as `model` for the submission
    /// (`weights/<model>.safetensors`), which the grader loads into the notebook's own model code
    /// and measures on held-out data (`hw9::tasks::measure`): the thresholds are graded on what
    /// the grader measures, not on the numbers this notebook printed. A copy is kept, so later
    /// cells that change the model do not change what is submitted.
    pub fn weights(&mut self, model: &str, vs: &tch::nn::VarStore) -> Result<()> {
        check_model_name(model)?;
        let mut named: Vec<(String, Tensor)> =
            vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).copy())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if named.is_empty() {
            return Err(Error::Input(format!("weights {model:?}: the variable store has no variables")));
        }
        self.weights.insert(model.to_string(), named);
        Ok(())
    }

    /// Like [`Recorder::weights`] for weights saved in a safetensors file (an epoch's export,
    /// `output/summarizer/epoch-1/model.safetensors`).
    pub fn weights_file(&mut self, model: &str, path: &std::path::Path) -> Result<()> {
        check_model_name(model)?;
        let mut named: Vec<(String, Tensor)> =
            crate::io::read_weights(path, "run the training cell first (it exports each epoch's weights)")?
                .into_iter()
                .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        self.weights.insert(model.to_string(), named);
        Ok(())
    }

    /// The notebook's name.
    pub fn notebook(&self) -> &str {
        &self.notebook
    }

    /// Checks the student's `f` against the public cases of `check`, then runs it on the
    /// autograder case and records its outputs for the submission; prints one pass/fail line and
    /// keeps it. The line fails when the public cases pass but the code panics on the graded input
    /// or returns a wrong shape, dtype or a NaN there (`the public case passes (…), but on the
    /// graded input: …`).
    /// Returns whether the check passed.
    pub fn check<O: Outputs>(&mut self, fixtures: &Fixtures, check: &str, f: impl Fn(&Case) -> O) -> bool {
        if self.grader.is_some() {
            return self.grader_check(fixtures, check, f);
        }
        let mut result = check_public(fixtures, check, &f);
        self.outputs.retain(|(n, _)| n != check && !n.starts_with(&format!("{check}.")));
        self.missing.remove(check);
        let graded = fixtures.case(check, "autograder");
        let problem = match &graded {
            Ok(case) => match run_outputs(|| f(case)) {
                Ok(outs) => {
                    let problem = graded_problem(case, &outs);
                    let mut named = named_outputs(check, &outs);
                    if named.iter().any(|(_, t)| !t.defined()) {
                        self.missing.insert(check.to_string(), "an output was an undefined tensor".into());
                        named.clear();
                    }
                    self.outputs.extend(named);
                    problem
                }
                Err(why) => {
                    self.missing.insert(check.to_string(), why.clone());
                    Some(why)
                }
            },
            Err(e) => {
                self.missing.insert(check.to_string(), e.to_string());
                if result.passed {
                    result.message += &format!(" (the fixtures have no graded case: {FIXTURES_FIX})");
                }
                None
            }
        };
        if let (true, Some(problem)) = (result.passed, problem) {
            result = CheckResult {
                passed: false,
                message: format!("the public case passes ({}), but on the graded input: {problem}", result.message),
                ..result
            };
        }
        println!("{result}");
        let passed = result.passed;
        self.results.retain(|r| r.name != check);
        self.results.push(result);
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
        max_abs_error: None,
        rel_error: None,
        tolerance: None,
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

    const TOL: Tolerance = Tolerance { atol: 1e-5, rtol: 1e-4 };

    #[test]
    fn rel_error_matches_the_original_formula() {
        let x = t(&[1.0, 2.0, 0.0], &[3]);
        let y = t(&[1.0, 2.2, 0.0], &[3]);
        // |2 - 2.2| / (2 + 2.2) = 0.047619...; the zero pair gives 0 / 1e-8 = 0.
        assert!((rel_error(&x, &y).unwrap() - 0.2 / 4.2).abs() < 1e-6);
        assert!(rel_error(&x, &t(&[1.0, 2.0], &[2])).is_err());
    }

    #[test]
    fn compare_reports_shape_dtype_and_where_values_differ() {
        let exp = Tensor::zeros([2, 49, 48], (Kind::Float, Device::Cpu));
        let got = Tensor::zeros([2, 48, 49], (Kind::Float, Device::Cpu));
        let r = compare("unpatchify", &got, &exp, TOL);
        assert!(!r.passed);
        assert_eq!(r.to_string(), "✗ FAIL unpatchify: expected shape (2, 49, 48), got (2, 48, 49)");
        let r = compare("x", &exp.to_kind(Kind::Double), &exp, TOL);
        assert_eq!(r.message, "expected dtype Float, got Double");
        let r = compare("x", &(&exp + 1.0), &(&exp + 1.00005), TOL);
        assert!(r.passed, "{r}");
        assert!(r.to_string().starts_with("✓ PASS x: max |Δ| 5.0e-5 within tolerance 1e-5 + 1e-4·|expected|"), "{r}");
        let r = compare("x", &(&exp + f64::NAN), &exp, TOL);
        assert_eq!(r.message, "expected finite numbers, got NaN at [0, 0, 0] (4704 of 4704 elements)");
        let r = compare("x", &Tensor::zeros([0], (Kind::Float, Device::Cpu)), &exp, TOL);
        assert_eq!(r.message, "expected shape (2, 49, 48), got (0,)");
        let r = compare("x", &Tensor::new(), &exp, TOL);
        assert_eq!(r.message, "invalid input: expected a tensor, got an undefined one (Tensor::new())");
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

    /// A fixture file of two checks: `double` (one output; a public case and a second public case
    /// `public_long`) and `pair` (two outputs); `graded_only_shapes` gives its graded case as the
    /// student handout does, shapes and dtypes only.
    fn fixture_file(dir: &Path, graded_only_shapes: bool) -> PathBuf {
        let path = dir.join("nb.safetensors");
        let x = t(&[1.0, 2.0, 3.0], &[3]);
        let long = t(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5]);
        let mut tensors = vec![
            ("double/atol", Tensor::from(1e-5f64)),
            ("double/rtol", Tensor::from(1e-4f64)),
            ("double/public/x", x.shallow_clone()),
            ("double/public/expected", &x * 2.0),
            ("double/public_long/x", long.shallow_clone()),
            ("double/public_long/expected", &long * 2.0),
            ("double/autograder/x", &long + 10.0),
            ("pair/atol", Tensor::from(1e-5f64)),
            ("pair/rtol", Tensor::from(1e-4f64)),
            ("pair/public/x", x.shallow_clone()),
            ("pair/public/expected.0", &x + 1.0),
            ("pair/public/expected.1", &x - 1.0),
            ("pair/autograder/x", x.shallow_clone()),
        ];
        if graded_only_shapes {
            tensors.push(("double/autograder/expected_shape", Tensor::from_slice(&[5i64])));
            tensors.push(("double/autograder/expected_dtype", Tensor::empty([0], (Kind::Float, Device::Cpu))));
            tensors.push(("pair/autograder/expected_shape.0", Tensor::from_slice(&[3i64])));
            tensors.push(("pair/autograder/expected_dtype.0", Tensor::empty([0], (Kind::Float, Device::Cpu))));
            tensors.push(("pair/autograder/expected_shape.1", Tensor::from_slice(&[3i64])));
            tensors.push(("pair/autograder/expected_dtype.1", Tensor::empty([0], (Kind::Float, Device::Cpu))));
        } else {
            tensors.push(("double/autograder/expected", (&long + 10.0) * 2.0));
            tensors.push(("pair/autograder/expected.0", &x + 1.0));
            tensors.push(("pair/autograder/expected.1", &x - 1.0));
        }
        Tensor::write_safetensors(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn recorder_checks_public_cases_and_records_autograder_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let fx = Fixtures::load_from("nb", &fixture_file(dir.path(), false)).unwrap();
        assert_eq!(fx.checks(), vec!["double", "pair"]);
        assert_eq!(fx.public_cases("double"), vec!["public", "public_long"]);
        let mut rec = Recorder::new("nb");
        assert!(rec.check(&fx, "double", |c| &c["x"] * 2.0));
        assert!(rec.results()[0].message.starts_with("2 public cases, "), "{:?}", rec.results()[0]);
        assert!(rec.check(&fx, "pair", |c| (&c["x"] + 1.0, &c["x"] - 1.0)));
        assert_eq!(rec.outputs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["double", "pair.0", "pair.1"]);
        assert_eq!(Vec::<f32>::try_from(&rec.outputs[0].1).unwrap(), [22.0, 24.0, 26.0, 28.0, 30.0]);
        // A TODO fails the check and leaves no output, and a wrong answer fails with its error.
        assert!(!rec.check(&fx, "double", |_| -> Tensor { todo!("TODO: multiply by two") }));
        assert_eq!(rec.results().last().unwrap().message, "not implemented yet (TODO: multiply by two)");
        assert_eq!(rec.missing["double"], "not implemented yet (TODO: multiply by two)");
        assert!(!rec.check(&fx, "double", |c| &c["x"] * 3.0));
        assert_eq!(rec.summary(), "1/2 checks passed");
        // The second public case catches what the first does not: here, code that only works for 3 elements.
        assert!(!rec.check(&fx, "double", |c| t(&[2.0, 4.0, 6.0], &[3]) * c["x"].ones_like()));
        assert!(rec.results().last().unwrap().message.starts_with("public_long case: "), "{:?}", rec.results());
        // A missing input name is reported, not a crash.
        assert!(!rec.check(&fx, "double", |c| c["y"].shallow_clone()));
        assert!(rec.results().last().unwrap().message.contains("has no input \"y\""));
    }

    #[test]
    fn a_public_pass_that_breaks_on_the_graded_input_says_so_at_once() {
        for shapes_only in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let fx = Fixtures::load_from("nb", &fixture_file(dir.path(), shapes_only)).unwrap();
            let mut rec = Recorder::new("nb");
            // Right on three and five elements, a panic on the graded input (its values exceed 10).
            let fragile = |c: &Case| {
                assert!(c["x"].max().double_value(&[]) < 10.0, "index out of range");
                &c["x"] * 2.0
            };
            assert!(!rec.check(&fx, "double", fragile));
            let r = rec.results().last().unwrap();
            assert!(
                r.message.starts_with("the public case passes (2 public cases, max |Δ| 0.0e0")
                    && r.message.ends_with("but on the graded input: your code panicked: index out of range"),
                "{r}"
            );
            assert_eq!(rec.missing["double"], "your code panicked: index out of range");
            // A wrong shape on the graded input (right on the public ones).
            let short = |c: &Case| {
                (&c["x"] * 2.0).narrow(0, 0, c["x"].size()[0].min(5) - i64::from(c["x"].max().double_value(&[]) > 10.0))
            };
            assert!(!rec.check(&fx, "double", short));
            let r = rec.results().last().unwrap();
            assert!(r.message.ends_with("but on the graded input: expected shape (5,), got (4,)"), "{r}");
            // A NaN, and a wrong dtype in the second of two outputs.
            assert!(!rec.check(&fx, "pair", |c| {
                let graded = c.label().ends_with("autograder");
                let second = if graded { (&c["x"] - 1.0).to_kind(Kind::Double) } else { &c["x"] - 1.0 };
                (&c["x"] + 1.0, second)
            }));
            let r = rec.results().last().unwrap();
            assert!(r.message.ends_with("but on the graded input: output 1: expected dtype Float, got Double"), "{r}");
            assert!(!rec.check(&fx, "pair", |c| {
                let first = if c.label().ends_with("autograder") { &c["x"] / 0.0 * 0.0 } else { &c["x"] + 1.0 };
                (first, &c["x"] - 1.0)
            }));
            let r = rec.results().last().unwrap();
            assert!(r.message.ends_with("output 0: expected finite numbers, got NaN or infinity"), "{r}");
            // Right everywhere: a plain pass.
            assert!(rec.check(&fx, "double", |c| &c["x"] * 2.0));
        }
    }

    #[test]
    fn missing_and_corrupt_fixtures_name_the_file_and_the_fix() {
        let err = Fixtures::load_from("nb", Path::new("/nonexistent/nb.safetensors")).unwrap_err().to_string();
        assert!(err.contains("missing fixtures for nb") && err.contains("make fixtures"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.safetensors"), b"not a safetensors file").unwrap();
        let err = Fixtures::load_from("nb", &dir.path().join("bad.safetensors")).unwrap_err().to_string();
        assert!(err.starts_with("corrupt fixture file") && err.contains("make fixtures"), "{err}");
    }
}
