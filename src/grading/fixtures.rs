//! A notebook's reference fixtures: `assets/fixtures/<notebook>.safetensors`, written by
//! `tools/gen_fixtures.py` with PyTorch's own modules. Keys: `<check>/tolerance`,
//! `<check>/<case>/<input name>` and `<check>/<case>/expected` (or `expected.0`, `expected.1`, …
//! for several outputs), where `<case>` is `public` or `autograder`; model weights under
//! `<model>/weights/<name>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

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
        crate::paths::assets().join("fixtures").join(format!("{notebook}.safetensors"))
    }

    /// Loads `assets/fixtures/<notebook>.safetensors`.
    pub fn load(notebook: &str) -> Result<Self> {
        Fixtures::load_from(notebook, &Fixtures::path_of(notebook))
    }

    /// Loads a fixture file from a given path.
    pub fn load_from(notebook: &str, path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Missing {
                what: format!("fixtures for {notebook}"),
                path: path.to_path_buf(),
                fix: FIXTURES_FIX.to_string(),
            });
        }
        let tensors = Tensor::read_safetensors(path).map_err(|e| Error::Corrupt {
            what: "fixture file".into(),
            path: path.to_path_buf(),
            detail: format!("not a readable safetensors file ({e}); regenerate it: {FIXTURES_FIX}"),
        })?;
        Ok(Fixtures { name: notebook.to_string(), path: path.to_path_buf(), tensors: tensors.into_iter().collect() })
    }

    /// The names of the checks this file has fixtures for.
    pub fn checks(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.tensors.keys().filter_map(|k| k.strip_suffix("/tolerance").map(str::to_string)).collect();
        names.dedup();
        names
    }

    /// The tolerance of `check`.
    pub fn tolerance(&self, check: &str) -> Result<f64> {
        Ok(self.tensor(&format!("{check}/tolerance"))?.double_value(&[]))
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
    pub(crate) tolerance: f64,
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
    pub fn tolerance(&self) -> f64 {
        self.tolerance
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
