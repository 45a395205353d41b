//! Where hw9's files are ([`paths`]) and the installation checks of `hw9 doctor` ([`doctor`]).
//!
//! Kept apart from the `hw9` crate so that it needs no libtorch: `hw9-doctor` builds and runs,
//! and says what to do, on a machine where libtorch is missing (where `hw9` cannot even start).

pub mod doctor;
pub mod paths;
