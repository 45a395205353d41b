//! Reading an untrusted upload within fixed bounds.
//!
//! [`Limits`] caps the zip's size, its number of entries, each entry's and the total inflated
//! size (read as a stream, never past the cap), and names that are absolute or climb out (`..`)
//! are refused, so a hostile upload costs little memory and time and is rejected with the reason.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// What the grader reads of an upload at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The zip file itself, in bytes.
    pub max_zip_bytes: u64,
    /// Entries in the zip.
    pub max_entries: usize,
    /// One entry, inflated, in bytes (but a model's weights, below).
    pub max_entry_bytes: u64,
    /// One `weights/<model>.safetensors` entry, inflated, in bytes.
    pub max_weights_bytes: u64,
    /// All entries together, inflated, in bytes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    /// A real submission is a notebook (a few MB with its figures), a small safetensors file of
    /// outputs, two JSON files and the trained models' weights. The weights are the big part:
    /// measured for every graded profile (`tests/submission.rs`, BENCHMARKS.md "Grading by
    /// re-running"), the largest is the `full` profile's summarizer, 136 MB a copy and two copies
    /// (the last epoch and the one before); the `cpu` profile's submissions are at most 26 MB.
    /// So: 16 entries, 32 MiB an entry, 160 MiB a weights file, 320 MiB in all and for the zip.
    fn default() -> Self {
        Limits {
            max_zip_bytes: 320 << 20,
            max_entries: 16,
            max_entry_bytes: 32 << 20,
            max_weights_bytes: 160 << 20,
            max_total_bytes: 320 << 20,
        }
    }
}

impl Limits {
    /// The most read of the entry `name`: [`Limits::max_weights_bytes`] for a model's weights,
    /// else [`Limits::max_entry_bytes`].
    pub fn entry_bytes(&self, name: &str) -> u64 {
        if name.starts_with("weights/") && name.ends_with(".safetensors") {
            self.max_weights_bytes
        } else {
            self.max_entry_bytes
        }
    }
}

/// The error for an upload that cannot be graded.
pub fn rejected(zip: &Path, why: impl std::fmt::Display) -> Error {
    Error::Rejected { path: zip.to_path_buf(), why: why.to_string() }
}

/// Reads every entry of the zip at `path` within `limits`: name → bytes.
pub fn read_upload(path: &Path, limits: &Limits) -> Result<BTreeMap<String, Vec<u8>>> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > limits.max_zip_bytes {
        return Err(rejected(
            path,
            format!("the upload is {len} bytes, more than the {} allowed", limits.max_zip_bytes),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| rejected(path, format!("not a zip archive ({e})")))?;
    if archive.len() > limits.max_entries {
        return Err(rejected(path, format!("{} entries, more than the {} allowed", archive.len(), limits.max_entries)));
    }
    let (mut members, mut total) = (BTreeMap::new(), 0u64);
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| rejected(path, format!("entry {i} cannot be read ({e})")))?;
        let name = entry.name().to_string();
        let safe =
            entry.enclosed_name().is_some_and(|p| p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        if !safe || entry.is_dir() {
            return Err(rejected(path, format!("entry {name:?} is not a plain relative file name")));
        }
        let room = limits.entry_bytes(&name).min(limits.max_total_bytes - total);
        // The declared size, when within the room (and 64 MiB), saves the vector's doublings (a
        // weights file is up to 160 MiB); it is only a hint: what is read is capped by `take`.
        let mut bytes = Vec::with_capacity(entry.size().min(room + 1).min(64 << 20) as usize);
        entry
            .take(room + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| rejected(path, format!("{name} cannot be inflated ({e})")))?;
        if bytes.len() as u64 > room {
            return Err(rejected(
                path,
                format!(
                    "{name} inflates past the limit ({} bytes for this entry, {} in all)",
                    limits.entry_bytes(&name),
                    limits.max_total_bytes
                ),
            ));
        }
        // An entry that declared more than it holds gives back what it reserved.
        bytes.shrink_to_fit();
        total += bytes.len() as u64;
        if members.insert(name.clone(), bytes).is_some() {
            return Err(rejected(path, format!("{name} appears twice")));
        }
    }
    Ok(members)
}
