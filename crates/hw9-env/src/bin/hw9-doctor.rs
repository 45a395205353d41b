//! `hw9-doctor`: the checks of `hw9 doctor` that do not load libtorch, so they still run, and
//! say what to do, when libtorch is missing (then `hw9` itself cannot start).

fn main() {
    if !hw9_env::doctor::report(&hw9_env::doctor::checks()) {
        std::process::exit(1);
    }
}
