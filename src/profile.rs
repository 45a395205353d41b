//! The compute budget: `HW9_PROFILE=quick|cpu|full`, read here and nowhere else.
//!
//! - `quick`: seconds per stage on tiny subsets; what the tests run. It proves the wiring, not
//!   the quality.
//! - `cpu` (default): real quality on a 2–8 core laptop in minutes per stage.
//! - `full`: the original homework's hyperparameters, for a GPU.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The environment variable that selects the profile.
pub const PROFILE_VAR: &str = "HW9_PROFILE";

/// How much compute a notebook or command may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Seconds per stage, tiny subsets (tests).
    Quick,
    /// Real quality on a laptop CPU in minutes (the default).
    Cpu,
    /// The original homework's sizes, for a GPU.
    Full,
}

impl Profile {
    /// Parses `quick`, `cpu` or `full` (case-insensitive, surrounding spaces ignored).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "quick" => Ok(Profile::Quick),
            "cpu" => Ok(Profile::Cpu),
            "full" => Ok(Profile::Full),
            other => Err(Error::Config(format!("{PROFILE_VAR} must be one of quick, cpu, full; got {other:?}"))),
        }
    }

    /// The profile chosen by `HW9_PROFILE` (unset or empty: `cpu`).
    pub fn from_env() -> Result<Self> {
        match std::env::var(PROFILE_VAR) {
            Ok(s) if !s.trim().is_empty() => Profile::parse(&s),
            _ => Ok(Profile::Cpu),
        }
    }

    /// Picks the value for this profile.
    pub fn pick<T>(self, quick: T, cpu: T, full: T) -> T {
        match self {
            Profile::Quick => quick,
            Profile::Cpu => cpu,
            Profile::Full => full,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Quick => "quick",
            Profile::Cpu => "cpu",
            Profile::Full => "full",
        })
    }
}

/// The current profile, printed the way every notebook shows it; an invalid `HW9_PROFILE` is an
/// error that names the valid values.
pub fn profile() -> Result<Profile> {
    let p = Profile::from_env()?;
    println!("profile: {p} (set {PROFILE_VAR}=quick|cpu|full before starting Jupyter to change it)");
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_profiles_and_rejects_others() {
        assert_eq!(Profile::parse("quick").unwrap(), Profile::Quick);
        assert_eq!(Profile::parse(" CPU ").unwrap(), Profile::Cpu);
        assert_eq!(Profile::parse("full").unwrap(), Profile::Full);
        let err = Profile::parse("fast").unwrap_err().to_string();
        assert_eq!(err, "invalid config: HW9_PROFILE must be one of quick, cpu, full; got \"fast\"");
        assert_eq!(Profile::Cpu.pick(1, 2, 3), 2);
        assert_eq!(Profile::Full.to_string(), "full");
    }
}
