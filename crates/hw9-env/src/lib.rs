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
/// one. Missing parent folders are created. The file gets the permissions `std::fs::write` would
/// give it (an existing file's own, else 0666 less the umask), not the temporary file's 0600:
/// a course's shared files (the handout, under JupyterHub) must stay readable by its students.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir
        }
        None => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o666);
        // The mode is given to open(2), so the umask applies to a new file as it would for fs::write.
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::write_atomic;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn a_new_file_gets_the_mode_fs_write_gives_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ours, plain) = (dir.path().join("ours.txt"), dir.path().join("plain.txt"));
        write_atomic(&ours, b"a").expect("write");
        std::fs::write(&plain, b"a").expect("write");
        assert_eq!(mode(&ours), mode(&plain), "a new file: as fs::write (0666 less the umask), not 0600");
        assert_ne!(mode(&ours) & 0o044, 0, "readable by others under the usual umask");

        let script = dir.path().join("run.sh");
        std::fs::write(&script, b"#!/bin/sh").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        write_atomic(&script, b"#!/bin/sh\necho").expect("rewrite");
        assert_eq!(mode(&script) & 0o700, 0o700, "an existing file keeps its mode (still executable)");
        assert_eq!(mode(&script) & 0o007, 0, "and gains nothing");
        assert_eq!(std::fs::read(&script).expect("read"), b"#!/bin/sh\necho");
    }
}
