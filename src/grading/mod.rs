//! Grading: the checks under each TODO cell ([`check`]) against the reference [`fixtures`], the
//! submission a notebook writes and `hw9 grade` reads back ([`submission`]), and the student
//! notebooks generated from the solution sources ([`release`]).

pub mod check;
pub mod fixtures;
pub mod release;
pub mod submission;
