//! The state a resumable run saves and continues from: the weights, AdamW's moments and step, the
//! history and the position in the epoch, in `<dir>/step-N` folders written atomically (the two
//! newest kept). A state that does not load (a truncated file, a history that does not parse) is
//! skipped with a warning naming it and the one before it is tried; another model's state (its
//! config differs) stops with an error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;
use tch::nn;

use super::adamw::AdamW;
use super::checkpoint::{load_checkpoint, numbered_dirs, save_checkpoint};
use super::config::Every;
use super::history::{History, Sums};
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// A run that can be stopped at any moment (an interrupted kernel, `kill -9`) and continued
/// exactly: see [`super::Fit::resumable`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resumable {
    /// `step-N` folders go here.
    pub dir: PathBuf,
    /// The model's config, saved and compared on resume.
    pub config: serde_json::Value,
    /// How often the state is saved.
    pub every: Every,
    /// The run's seed: each epoch's data order and each step's randomness derive from it.
    pub seed: u64,
}

/// What a resumable run saves besides the weights and the optimizer's moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunState {
    /// The epoch in progress (1-based).
    pub(super) epoch: i64,
    /// Batches of it already trained.
    pub(super) in_epoch: usize,
    /// The optimizer's update count.
    pub(super) optimizer_step: i64,
    /// Everything recorded so far.
    pub(super) history: History,
    /// The epoch in progress's running sums.
    pub(super) sums: Sums,
    /// Seconds of training done (a time-budgeted run continues its budget and schedule from here).
    #[serde(default)]
    pub(super) seconds: f64,
    /// Seconds of training done when the epoch in progress began (its time, resumed or not).
    #[serde(default)]
    pub(super) epoch_start: Option<f64>,
}

/// The folder of a run's state under `dir`: `<title>-<key>`, the key a hash of the title,
/// `config` and the names and shapes of `vs`'s variables, so that a changed config or model
/// starts afresh in a folder of its own instead of meeting another run's state. Returns the
/// folder and the JSON the key was made from (saved with the state and compared on resume).
pub(super) fn state_dir(
    dir: &Path,
    title: &str,
    vs: &nn::VarStore,
    config: &impl Serialize,
) -> Result<(PathBuf, serde_json::Value)> {
    let mut shapes: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
    shapes.sort();
    let key = serde_json::json!({ "title": title, "config": config, "variables": shapes });
    let digest = sha2::Sha256::digest(serde_json::to_vec(&key)?);
    let hex = format!("{digest:x}"); // sha2's digests print as lowercase hex
    let hex = &hex[..12];
    let slug: String =
        title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let slug = slug.split('-').filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-"); // "1 % of" -> "1-of"
    Ok((dir.join(format!("{slug}-{hex}")), key))
}

/// The newest valid `step-N` state of a resumable run, loaded into `vs` and `opt`; a state that
/// does not load is skipped with a warning naming it; another model's stops with an error.
pub(super) fn load_newest(title: &str, vs: &nn::VarStore, opt: &mut AdamW, r: &Resumable) -> Result<Option<RunState>> {
    for (n, dir) in numbered_dirs(&r.dir, "step-") {
        let loaded = (|| -> Result<RunState> {
            let st: RunState = read_json(&dir.join("state.json"), "run state")?;
            load_checkpoint(vs, &r.config, &dir)?;
            opt.load(&dir.join("optimizer.safetensors"), st.optimizer_step)?;
            Ok(st)
        })();
        match loaded {
            Ok(st) => {
                println!(
                    "{title}: resumed from {} (epoch {}, batch {} of it, step {})",
                    dir.display(),
                    st.epoch,
                    st.in_epoch,
                    st.history.step_losses.len()
                );
                return Ok(Some(st));
            }
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => eprintln!("{title}: skipping the saved state {} (step {n}): {e}", dir.display()),
        }
    }
    Ok(None)
}

/// Saves a resumable run's state into `<dir>/step-N` atomically (a temporary folder renamed into
/// place), keeping the two newest.
pub(super) fn save(vs: &nn::VarStore, opt: &AdamW, r: &Resumable, st: &RunState) -> Result<()> {
    let n = st.history.step_losses.len();
    let tmp = r.dir.join(format!(".step-{n}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    save_checkpoint(vs, &r.config, &tmp)?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    write_atomic(&tmp.join("state.json"), &serde_json::to_vec(st)?)?;
    let dest = r.dir.join(format!("step-{n}"));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    for (_, old) in numbered_dirs(&r.dir, "step-").into_iter().skip(2) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Reads a JSON file saved with a state; one that does not parse is corrupt.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::corrupt(what, path, e.to_string()))
}
