//! Helpers the integration tests share (`mod common;` in each test crate that uses them).

/// libtorch's generator is one per process and the tests of a crate run in parallel threads: a
/// test that needs an exact random stream (a seeded model, a resumed run compared bit for bit)
/// holds this lock, or it would see another test's draws in its own.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
