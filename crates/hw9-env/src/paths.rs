//! Where the project's files are: the repository root, `assets/`, the venv's libtorch.

use std::path::PathBuf;

/// The repository root: `$HW9_ROOT` when set, else the checkout this crate was built from
/// (it lives in `<root>/crates/hw9-env`).
pub fn root() -> PathBuf {
    match std::env::var_os("HW9_ROOT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))),
    }
}

/// `assets/` under the root: committed small files, and (git-ignored) what setup installs.
pub fn assets() -> PathBuf {
    root().join("assets")
}

/// The libtorch folder: `$LIBTORCH` when set, else the torch package in the project venv.
pub fn libtorch() -> PathBuf {
    match std::env::var_os("LIBTORCH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root().join(".venv/lib/python3.11/site-packages/torch"),
    }
}

/// Reusable caches outside the clone: `$HW9_CACHE`, else `$XDG_CACHE_HOME/hw9`, else
/// `~/.cache/hw9` (what setup uses too).
pub fn cache() -> PathBuf {
    let set = |v: &str| std::env::var_os(v).filter(|p| !p.is_empty()).map(PathBuf::from);
    set("HW9_CACHE")
        .or_else(|| set("XDG_CACHE_HOME").map(|p| p.join("hw9")))
        .or_else(|| set("HOME").map(|p| p.join(".cache/hw9")))
        .unwrap_or_else(|| root().join(".cache"))
}
