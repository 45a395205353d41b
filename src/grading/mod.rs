//! Grading: the checks under each TODO cell ([`check`]) against the reference [`fixtures`], the
//! submission a notebook writes ([`submission`]), the student notebooks generated from the
//! solution sources ([`release`]), and the student handout without the answers ([`handout`]).
//!
//! The TA's side — what each notebook grades for how many points ([`spec`]), grading one upload
//! ([`grade`]), a folder into a gradebook ([`batch`]), Gradescope's autograder ([`gradescope`]) —
//! is the libtorch-free crate `hw9_grade` (`crates/hw9-grade`), re-exported here; the checks in
//! the notebooks use its comparison ([`compare`]) too.

pub mod check;
pub mod fixtures;
pub mod handout;
pub mod release;
pub mod submission;

pub use hw9_grade::{batch, compare, grade, gradescope, log, spec, upload};
