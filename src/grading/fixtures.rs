//! A notebook's reference fixtures: `assets/fixtures/<notebook>.safetensors`, written by
//! `tools/gen_fixtures.py` with PyTorch's own modules. Keys: `<check>/atol` and `<check>/rtol`
//! (the tolerance: `|got − expected| ≤ atol + rtol·|expected|` per element),
//! `<check>/<case>/<input name>` and `<check>/<case>/expected` (or `expected.0`, `expected.1`, …
//! for several outputs), where `<case>` is `public` (and `public_<what>` for more public cases,
//! each shown in the notebook) or `autograder`; model weights under `<model>/weights/<name>`.
//!
//! The student handout ships the autograder cases' inputs without their expected outputs, only
//! their shapes and dtypes (`expected_shape[.i]`: the dims as int64; `expected_dtype[.i]`: an
//! empty tensor of the dtype), so that a check can tell at once when a student's code panics or
//! returns a wrong shape on an input it was not shown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

pub use hw9_grade::compare::Tolerance;

use crate::error::{Error, Result};

/// The reference fixtures of one notebook.
pub struct Fixtures {
    name: String,
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl std::fmt::Debug for Fixtures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fixtures({:?}, {} tensors)", self.name, self.tensors.len())
    }
}

pub use hw9_grade::fixtures::FIXTURES_FIX;

impl Fixtures {
    /// Where a notebook's fixture file lives.
    pub fn path_of(notebook: &str) -> PathBuf {
        hw9_env::paths::assets().join("fixtures").join(format!("{notebook}.safetensors"))
    }

    /// Loads `assets/fixtures/<notebook>.safetensors`.
    pub fn load(notebook: &str) -> Result<Self> {
        Fixtures::load_from(notebook, &Fixtures::path_of(notebook))
    }

    /// Loads a fixture file from a given path.
    pub fn load_from(notebook: &str, path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::missing(
                format!("fixtures for {notebook}"),
                path.to_path_buf(),
                FIXTURES_FIX.to_string(),
            ));
        }
        let tensors = Tensor::read_safetensors(path).map_err(|e| {
            Error::corrupt(
                "fixture file",
                path.to_path_buf(),
                format!("not a readable safetensors file ({e}); regenerate it: {FIXTURES_FIX}"),
            )
        })?;
        Ok(Fixtures { name: notebook.to_string(), path: path.to_path_buf(), tensors: tensors.into_iter().collect() })
    }

    /// The names of the checks this file has fixtures for.
    pub fn checks(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.tensors.keys().filter_map(|k| k.strip_suffix("/atol").map(str::to_string)).collect();
        names.dedup();
        names
    }

    /// The tolerance of `check` (`<check>/atol`, `<check>/rtol`).
    pub fn tolerance(&self, check: &str) -> Result<Tolerance> {
        Ok(Tolerance::new(
            self.tensor(&format!("{check}/atol"))?.double_value(&[]),
            self.tensor(&format!("{check}/rtol"))?.double_value(&[]),
        ))
    }

    /// The names of `check`'s public cases, `public` first: the cases a notebook shows.
    pub fn public_cases(&self, check: &str) -> Vec<String> {
        let prefix = format!("{check}/");
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix)?.split('/').next())
            .filter(|c| *c == "public" || c.starts_with("public_"))
            .map(str::to_string)
            .collect();
        names.dedup();
        names.sort_by_key(|c| (c != "public", c.clone()));
        names
    }

    /// One tensor by its full key.
    pub fn tensor(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| {
            Error::Input(format!(
                "fixture file {} has no tensor {key:?}; regenerate it: {FIXTURES_FIX}",
                self.path.display()
            ))
        })
    }

    /// The weights stored for `model` (keys `<model>/weights/<parameter name>`).
    pub fn weights(&self, model: &str) -> Result<std::collections::HashMap<String, Tensor>> {
        let prefix = format!("{model}/weights/");
        let w: std::collections::HashMap<String, Tensor> = self
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.shallow_clone())))
            .collect();
        if w.is_empty() {
            return Err(Error::Input(format!(
                "fixture file {} has no weights for {model:?}. Regenerate it: {FIXTURES_FIX}",
                self.path.display()
            )));
        }
        Ok(w)
    }

    /// Loads the fixture weights of `model` into `vs` (every variable of `vs` must be there, by
    /// name, with its shape: the given constructor fixes the names).
    pub fn load_weights(&self, model: &str, vs: &mut tch::nn::VarStore) -> Result<()> {
        crate::io::copy_weights(vs, &self.weights(model)?, &format!("the fixture weights of {model:?}"))
    }

    /// The inputs and expected outputs of one case (`"public"` or `"autograder"`) of a check.
    pub fn case(&self, check: &str, case: &str) -> Result<Case> {
        let prefix = format!("{check}/{case}/");
        let tensors: BTreeMap<String, Tensor> = self
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.shallow_clone())))
            .collect();
        if tensors.is_empty() {
            return Err(Error::Input(format!(
                "fixture file {} has no case {check}/{case}; it has checks {:?}. Regenerate it: {FIXTURES_FIX}",
                self.path.display(),
                self.checks()
            )));
        }
        Ok(Case { label: format!("{check}/{case}"), tolerance: self.tolerance(check)?, tensors })
    }
}

/// One fixture case: named inputs (index it: `case["x"]`) and the expected outputs.
pub struct Case {
    pub(crate) label: String,
    pub(crate) tolerance: Tolerance,
    tensors: BTreeMap<String, Tensor>,
}

impl Case {
    /// The expected outputs, in order (`expected`, or `expected.0`, `expected.1`, ...).
    pub fn expected(&self) -> Vec<&Tensor> {
        if let Some(t) = self.tensors.get("expected") {
            return vec![t];
        }
        (0..).map_while(|i| self.tensors.get(&format!("expected.{i}"))).collect()
    }

    /// The tolerance of this case's check.
    pub fn tolerance(&self) -> Tolerance {
        self.tolerance
    }

    /// What the outputs must look like: each expected output's shape and dtype, from the
    /// expected outputs or, where only those are shipped (a graded case in the student handout),
    /// from `expected_shape[.i]` and `expected_dtype[.i]`. Empty when the case has neither.
    pub fn expected_shapes(&self) -> Vec<(Vec<i64>, Kind)> {
        let full = self.expected();
        if !full.is_empty() {
            return full.iter().map(|t| (t.size(), t.kind())).collect();
        }
        let meta = |suffix: &str| {
            let shape = self.tensors.get(&format!("expected_shape{suffix}"))?;
            let dtype = self.tensors.get(&format!("expected_dtype{suffix}"))?;
            Some((Vec::<i64>::try_from(shape).ok()?, dtype.kind()))
        };
        if let Some(one) = meta("") {
            return vec![one];
        }
        (0..).map_while(|i| meta(&format!(".{i}"))).collect()
    }

    /// The case's label, `<check>/<case>`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The names of the inputs.
    pub fn inputs(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).filter(|k| !k.starts_with("expected")).collect()
    }
}

impl std::ops::Index<&str> for Case {
    type Output = Tensor;

    /// The input `name`; a missing name panics with the names that exist (caught by checks).
    fn index(&self, name: &str) -> &Tensor {
        match self.tensors.get(name) {
            Some(t) => t,
            None => panic!("fixture case {} has no input {name:?}; it has {:?}", self.label, self.inputs()),
        }
    }
}
