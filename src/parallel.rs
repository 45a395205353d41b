//! The crate's own passes over tensor memory (AdamW's fused update, dropout masks) split over
//! libtorch's worker threads: its OpenMP team, reached through libgomp's `GOMP_parallel`.
//!
//! Why not `std::thread` or rayon: after each parallel op libtorch's OpenMP workers keep spinning
//! for a while (libgomp's default wait policy), so a thread of ours started between two ops
//! shares a core with a spinning worker and gains next to nothing (BENCHMARKS.md, "Rust passes on
//! libtorch's threads"). Handed to `GOMP_parallel`, the parts run on those same workers, which are
//! waiting for work anyway. Where libtorch's libgomp is not loaded (macOS, a libtorch built with
//! another OpenMP or none) the parts run on scoped threads, as before.
//!
//! The parts must not call into libtorch (they run on its workers outside any of its parallel
//! regions): they are plain loops over slices.

use std::any::Any;
use std::os::raw::{c_int, c_uint, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock, PoisonError};

/// libgomp's entry points, looked up once in the libgomp libtorch already loaded.
struct Gomp {
    /// `GOMP_parallel(fn, data, num_threads, flags)`: runs `fn(data)` on a team of threads, the
    /// caller among them, and returns when all have returned.
    parallel: unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> c_int,
    num_threads: unsafe extern "C" fn() -> c_int,
}

fn gomp() -> Option<&'static Gomp> {
    static GOMP: OnceLock<Option<Gomp>> = OnceLock::new();
    GOMP.get_or_init(find_gomp).as_ref()
}

#[cfg(target_os = "linux")]
fn find_gomp() -> Option<Gomp> {
    // Make sure libtorch (and with it its libgomp) is loaded, then find that libgomp: by its
    // soname without loading another copy (RTLD_NOLOAD), else wherever the global scope has it
    // (a libtorch whose libgomp is renamed, as some wheels do).
    let _ = tch::get_num_threads();
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the signature libgomp
    // declares for it (libgomp's ABI, stable since GCC 4.9).
    unsafe {
        let named = libc::dlopen(c"libgomp.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        let lib = if named.is_null() { libc::RTLD_DEFAULT } else { named };
        let parallel = libc::dlsym(lib, c"GOMP_parallel".as_ptr());
        let thread_num = libc::dlsym(lib, c"omp_get_thread_num".as_ptr());
        let num_threads = libc::dlsym(lib, c"omp_get_num_threads".as_ptr());
        if parallel.is_null() || thread_num.is_null() || num_threads.is_null() {
            return None;
        }
        Some(Gomp {
            parallel: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
            >(parallel),
            thread_num: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(thread_num),
            num_threads: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(num_threads),
        })
    }
}

#[cfg(not(target_os = "linux"))]
fn find_gomp() -> Option<Gomp> {
    None
}

/// How many threads the parts may use: libtorch's intra-op thread count.
pub(crate) fn threads() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1)
}

/// Below this many values a thread, a pass over memory is quicker on one thread than handed out.
pub(crate) const VALUES_PER_THREAD: usize = 1 << 15;

/// How many of `threads` a pass over `values` values uses: at least one, at most one per
/// [`VALUES_PER_THREAD`].
pub(crate) fn team_for(values: usize, threads: usize) -> usize {
    threads.clamp(1, (values / VALUES_PER_THREAD).max(1))
}

/// Runs `f` on each of `parts`, on libtorch's worker threads where it can (at most [`threads`]
/// at once), and returns when all are done. A panic in `f` is raised again here, after the others
/// finished. Which thread runs which part is not fixed: `f` must give the same result anywhere.
/// Called from the thread that runs libtorch's ops (as the crate's passes are), the parts run on
/// that thread's OpenMP team; from another thread libgomp gives that thread a team of its own.
pub(crate) fn for_each<T: Send>(parts: Vec<T>, f: impl Fn(T) + Sync) {
    let team = threads().min(parts.len());
    if team <= 1 {
        parts.into_iter().for_each(f);
        return;
    }
    match gomp() {
        Some(gomp) => on_gomp(gomp, parts, team, &f),
        None => on_scoped_threads(parts, team, &f),
    }
}

/// `team` scoped threads, the caller among them, member `i` taking parts `i`, `i + team`, ...
fn on_scoped_threads<T: Send>(parts: Vec<T>, team: usize, f: &(dyn Fn(T) + Sync)) {
    let mut shares: Vec<Vec<T>> = (0..team).map(|_| Vec::new()).collect();
    for (i, part) in parts.into_iter().enumerate() {
        shares[i % team].push(part);
    }
    // Every part runs even after another panicked; the first panic is kept.
    let run = move |share: Vec<T>| {
        share
            .into_iter()
            .filter_map(|part| catch_unwind(AssertUnwindSafe(|| f(part))).err())
            .fold(None, |first, e| first.or(Some(e)))
    };
    let mut shares = shares.into_iter();
    let here = shares.next().unwrap_or_default();
    let first_panic = std::thread::scope(|s| {
        let others: Vec<_> = shares.map(|share| s.spawn(move || run(share))).collect();
        let mine = run(here);
        let joined = others.into_iter().map(|h| h.join().unwrap_or_else(Some));
        std::iter::once(mine).chain(joined).flatten().next()
    });
    if let Some(e) = first_panic {
        resume_unwind(e);
    }
}

/// One `GOMP_parallel` call: team member `i` of `n` takes parts `i`, `i + n`, ...
fn on_gomp<T: Send>(gomp: &Gomp, parts: Vec<T>, team: usize, f: &(dyn Fn(T) + Sync)) {
    struct Job<'a, T> {
        gomp: &'a Gomp,
        slots: Vec<Mutex<Option<T>>>,
        f: &'a (dyn Fn(T) + Sync),
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }
    unsafe extern "C" fn member<T: Send>(data: *mut c_void) {
        // SAFETY: `data` is the `Job<T>` below, alive until GOMP_parallel returns; only shared
        // references are taken, and its fields are Sync.
        let job = unsafe { &*(data as *const Job<T>) };
        // SAFETY: libgomp's own functions, called on a thread of the team.
        let (me, n) = unsafe { ((job.gomp.thread_num)(), (job.gomp.num_threads)()) };
        let (me, n) = (usize::try_from(me).unwrap_or(0), usize::try_from(n).unwrap_or(1).max(1));
        // No unwinding across the C frame: catch here, raise again in `on_gomp`.
        let run = catch_unwind(AssertUnwindSafe(|| {
            for slot in job.slots.iter().skip(me).step_by(n) {
                let part = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(part) = part {
                    (job.f)(part);
                }
            }
        }));
        if let Err(e) = run {
            job.panic.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        }
    }
    let job = Job { gomp, slots: parts.into_iter().map(|p| Mutex::new(Some(p))).collect(), f, panic: Mutex::new(None) };
    // SAFETY: `member::<T>` matches the callback type; `job` outlives the call, which returns only
    // once every member has returned.
    unsafe { (gomp.parallel)(member::<T>, &job as *const Job<T> as *mut c_void, team as c_uint, 0) };
    // A team smaller than asked for (a nested call) still took every part: member i takes
    // i, i + n, ... for the n it was given. Anything left (a member that never ran) runs here.
    for slot in &job.slots {
        if let Some(part) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(part))) {
                job.panic.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
            }
        }
    }
    if let Some(e) = job.panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
        resume_unwind(e);
    }
}

/// libtorch's thread count for this test thread, put back however the test ends.
#[cfg(test)]
pub(crate) struct Threads(i32);

#[cfg(test)]
impl Threads {
    pub(crate) fn set(n: i32) -> Self {
        let previous = Threads(tch::get_num_threads());
        tch::set_num_threads(n);
        previous
    }
}

#[cfg(test)]
impl Drop for Threads {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Each part once, on two threads; through libgomp (its thread numbers 0 and 1) on Linux.
    fn runs_every_part_once_on_two_threads(run: impl Fn(Vec<usize>, &(dyn Fn(usize) + Sync))) -> Vec<i32> {
        let _threads = Threads::set(2);
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        let seen = Mutex::new(std::collections::BTreeMap::new());
        run((0..37).collect(), &|i: usize| {
            hits[i].fetch_add(1, Ordering::SeqCst);
            // SAFETY: libgomp's own function (0 outside a parallel region).
            let omp = gomp().map_or(-1, |g| unsafe { (g.thread_num)() });
            seen.lock().unwrap().insert(format!("{:?}", std::thread::current().id()), omp);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1), "a part ran twice or never");
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 2, "the parts did not run on two threads: {seen:?}");
        let mut omp: Vec<i32> = seen.into_values().collect();
        omp.sort();
        omp
    }

    #[test]
    fn every_part_runs_once_on_libtorchs_threads() {
        // libtorch's libgomp is where the parts run on Linux: as thread 0 (the caller) and 1 of
        // its team.
        #[cfg(target_os = "linux")]
        {
            assert!(gomp().is_some(), "libtorch's libgomp was not found loaded");
            assert_eq!(runs_every_part_once_on_two_threads(|p, f| for_each(p, f)), [0, 1]);
        }
        #[cfg(not(target_os = "linux"))]
        runs_every_part_once_on_two_threads(|p, f| for_each(p, f));
    }

    #[test]
    fn the_scoped_threads_fallback_runs_every_part_once_on_two_threads() {
        runs_every_part_once_on_two_threads(|p, f| on_scoped_threads(p, 2, f));
    }

    /// A part's panic reaches the caller with its own message, after every other part ran.
    fn a_panic_in_a_part_reaches_the_caller(run: impl Fn(Vec<usize>, &(dyn Fn(usize) + Sync))) {
        let _threads = Threads::set(2);
        let done = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            run((0..8).collect(), &|i: usize| {
                if i == 3 {
                    panic!("part 3 failed");
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        }));
        let message = caught.expect_err("the panic was lost");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"part 3 failed"));
        assert_eq!(done.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn a_panic_in_a_part_reaches_the_caller_after_the_rest_ran() {
        a_panic_in_a_part_reaches_the_caller(|p, f| for_each(p, f));
        a_panic_in_a_part_reaches_the_caller(|p, f| on_scoped_threads(p, 2, f));
    }
}
