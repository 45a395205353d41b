//! The libtorch-free foundations of hw9: where its files are ([`paths`]), atomic file writes
//! ([`write_atomic`]), the progress bar of long work ([`progress`]), and the installation checks of
//! `hw9 doctor` ([`doctor`]).
//!
//! Kept apart from the `hw9` crate so that it needs no libtorch: `hw9-doctor` builds and runs,
//! and says what to do, on a machine where libtorch is missing (where `hw9` cannot even start),
//! and the grader (`hw9-grade`) builds on a bare machine.

#![warn(missing_docs)]

pub mod doctor;
pub mod paths;
pub mod progress;

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` through a uniquely named temporary file in the same folder, flushed
/// to disk, then renamed over `path`: a reader never sees half a file and a crash never leaves
/// one. Missing parent folders are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir
        }
        None => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
