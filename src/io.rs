//! Files: atomic writes, JSON configs, and safetensors weights read into a `VarStore` by name.
//!
//! Every file hw9 writes goes through [`write_atomic`] (a reader never sees half a file, a crash
//! never leaves one), and every weights file is read through [`read_weights`] and copied with
//! [`copy_weights`], which checks every name and shape before it changes a variable.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use tch::{nn, Tensor};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: through a temporary file in the same folder, flushed, then
/// renamed (see [`hw9_env::write_atomic`]); missing parent folders are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    hw9_env::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// Reads `<dir>/config.json`: a checkpoint's or a Hugging Face model folder's. A missing file
/// says what a model folder holds; one that does not parse as `C` is reported as corrupt.
pub fn read_config<C: DeserializeOwned>(dir: &Path) -> Result<C> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::missing(
            "model config",
            path.clone(),
            "point at a model folder (config.json + model.safetensors): a checkpoint hw9 saved, or a Hugging Face \
              folder (make setup installs MiniLM)",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::corrupt("model config", path, e.to_string()))
}

/// Reads a safetensors weights file by name; a missing file says `fix`, an unreadable one is
/// reported as corrupt.
pub fn read_weights(path: &Path, fix: &str) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::missing("weights", path.to_path_buf(), fix));
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| {
        Error::corrupt("weights file", path.to_path_buf(), format!("not a readable safetensors file ({e})"))
    })?;
    Ok(tensors.into_iter().collect())
}

/// Copies `tensors` into the variables of `vs` with the same names. Every variable must be there
/// with its shape (checked for all before any is changed); `source` names where the tensors came
/// from in the error.
pub fn copy_weights(vs: &nn::VarStore, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0)); // report the first problem deterministically
    for (name, var) in &vars {
        match tensors.get(name) {
            None => {
                let mut have: Vec<&String> = tensors.keys().collect();
                have.sort();
                return Err(Error::Input(format!(
                    "{source} has no tensor {name:?}, which this model needs (saved from another model, or a \
                     parameter named differently?). It has: {have:?}"
                )));
            }
            Some(t) if t.size() != var.size() => {
                return Err(Error::Shape {
                    what: format!("{source} tensor {name:?} (saved from another config?)"),
                    expected: var.size(),
                    got: t.size(),
                })
            }
            Some(_) => {}
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            var.f_copy_(&tensors[&name].to_device(var.device()).to_kind(var.kind()))?;
        }
        Ok(())
    })
}

/// Loads a Hugging Face folder's `model.safetensors` into `vs`, dropping `strip_prefix` from the
/// names that carry it (`bert.` of a `BertForPreTraining`, `transformer.` of a
/// `GPT2LMHeadModel`); names and shapes are checked, and tensors the model has no variable for
/// (buffers, heads) are ignored.
pub fn load_hf_weights(vs: &nn::VarStore, dir: &Path, strip_prefix: &str) -> Result<()> {
    let path = dir.join("model.safetensors");
    let tensors = read_weights(&path, "a Hugging Face folder has model.safetensors beside config.json")?;
    let named =
        tensors.into_iter().map(|(k, v)| (k.strip_prefix(strip_prefix).map(str::to_string).unwrap_or(k), v)).collect();
    copy_weights(vs, &named, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
    }

    #[test]
    fn a_missing_or_broken_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_config::<serde_json::Value>(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing model config") && err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        let err = read_config::<serde_json::Value>(dir.path()).unwrap_err().to_string();
        assert!(err.contains("corrupt model config"), "{err}");
    }
}
