//! Checkpoints: a model folder of `model.safetensors` + `config.json` (and, for a training run,
//! `history.json`), written atomically, read back with the config checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{nn, Tensor};

use crate::error::{Error, Result};
use crate::io::{copy_weights, read_config, read_weights, write_atomic};

const TRAIN_FIRST: &str = "train and save the model first";

/// Saves `vs` as `<dir>/model.safetensors` and `config` as `<dir>/config.json`, each atomically.
pub fn save_checkpoint<C: Serialize>(vs: &nn::VarStore, config: &C, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(config)?)?;
    let tmp = tempfile::Builder::new()
        .prefix(".model.")
        .suffix(".safetensors") // tch picks the format by extension
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?
        .into_temp_path();
    vs.save(&tmp)?;
    tmp.persist(dir.join("model.safetensors")).map_err(|e| Error::io(dir, e.error))
}

/// Refuses a checkpoint whose `config.json` differs from `expected`, naming both.
fn check_saved_config<C: DeserializeOwned + PartialEq + std::fmt::Debug>(expected: &C, dir: &Path) -> Result<()> {
    let saved: C = read_config(dir)?;
    if &saved != expected {
        return Err(Error::Config(format!(
            "the checkpoint in {} was saved with another config:\n  saved: {saved:?}\n  this model: {expected:?}",
            dir.display()
        )));
    }
    Ok(())
}

/// Loads `<dir>/model.safetensors` into `vs`, after checking that `<dir>/config.json` equals
/// `expected` and that every variable is there with its shape: a checkpoint from another config
/// is an error that names the difference.
pub fn load_checkpoint<C: DeserializeOwned + PartialEq + std::fmt::Debug>(
    vs: &nn::VarStore,
    expected: &C,
    dir: &Path,
) -> Result<()> {
    check_saved_config(expected, dir)?;
    load_weights(vs, &dir.join("model.safetensors"))
}

/// Loads a checkpoint saved by [`save_checkpoint`] into the variables of `vs` under `prefix`
/// (e.g. an MAE built at `vs.root() / "mae"` inside a classifier's store), after checking its
/// config against `expected`. Variables outside `prefix` are left as they are.
pub fn load_checkpoint_into<C: DeserializeOwned + PartialEq + std::fmt::Debug>(
    vs: &nn::VarStore,
    prefix: &str,
    expected: &C,
    dir: &Path,
) -> Result<()> {
    check_saved_config(expected, dir)?;
    let path = dir.join("model.safetensors");
    let mut named: HashMap<String, Tensor> =
        read_weights(&path, TRAIN_FIRST)?.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v)).collect();
    // Variables outside the prefix keep their values.
    for (k, v) in vs.variables() {
        if !k.starts_with(&format!("{prefix}.")) {
            named.insert(k, v.detach().copy());
        }
    }
    copy_weights(vs, &named, &path.display().to_string())
}

/// Loads safetensors weights into `vs` by name, checking names and shapes first.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    copy_weights(vs, &read_weights(path, TRAIN_FIRST)?, &path.display().to_string())
}

/// The newest `epoch-N` checkpoint folder under `dir` that is complete (weights and history).
pub fn latest_checkpoint(dir: &Path) -> Option<(i64, PathBuf)> {
    checkpoints_newest_first(dir).into_iter().next()
}

/// Every complete `epoch-N` checkpoint folder under `dir` (weights and history present), newest
/// first.
pub fn checkpoints_newest_first(dir: &Path) -> Vec<(i64, PathBuf)> {
    numbered_dirs(dir, "epoch-")
        .into_iter()
        .filter(|(_, p)| p.join("history.json").exists() && p.join("model.safetensors").exists())
        .map(|(n, p)| (n as i64, p))
        .collect()
}

/// The `<prefix>N` folders under `dir`, highest `N` first (none when `dir` cannot be read).
pub(crate) fn numbered_dirs(dir: &Path, prefix: &str) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.strip_prefix(prefix)?.parse::<usize>().ok()?, e.path())))
        .filter(|(_, p)| p.is_dir())
        .collect();
    found.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    found
}
