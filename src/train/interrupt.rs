//! The notebook's stop button during training.
//!
//! The hw9 kernel (evcxr with the patches in `tools/evcxr/`) answers Jupyter's interrupt with
//! SIGINT to the process that runs the cells, and kills that process (losing every variable) only
//! if the cell still runs 10 s later. While a [`Fit`](super::Fit) runs, SIGINT only sets a flag:
//! the loop sees it after the step in progress, saves its state when the run is resumable and
//! returns [`Error::Interrupted`](crate::Error::Interrupted); the cell ends with that error and
//! the variables of earlier cells are kept (evcxr drops those a failed cell defined itself).
//! Outside training SIGINT does what it always did (the process ends), so a student's own endless
//! loop still stops. In a terminal, Ctrl-C does the same to a training run; a second Ctrl-C
//! before it stops ends the process.
//!
//! Written on `libc::sigaction`, not on `signal-hook`: evcxr links each cell's code with its own
//! copy of this crate (and of any crate it uses), so statics are per cell. signal-hook keeps its
//! OS handler installed for good and chains to the one before it, so a copy from an earlier cell,
//! disarmed, would end the process when a later cell's run is armed. Here the handler is installed
//! only while a run is armed and the previous disposition (the default) put back when it ends, so
//! one copy's handler is installed at a time, and it reads that copy's flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// SIGINT came while armed. The handler only stores to it (async-signal-safe).
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// How many runs are armed (tests train in several threads at once), and the disposition to put
/// back when the last ends.
static ARMED: Mutex<(usize, Option<Disposition>)> = Mutex::new((0, None));

#[cfg(unix)]
struct Disposition(libc::sigaction);

#[cfg(not(unix))]
struct Disposition;

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    // A second press while the run has not stopped yet (a long step): end the process, as
    // without a handler. signal and raise are async-signal-safe.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: resets SIGINT to its default action and raises it again.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
}

/// Installs the handler; the disposition it replaced (None when it could not).
#[cfg(unix)]
fn install() -> Option<Disposition> {
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that only stores to an
    // atomic; the old disposition is written into `old`.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(libc::SIGINT, &new, &mut old) == 0).then_some(Disposition(old))
    }
}

#[cfg(unix)]
fn restore(old: Disposition) {
    // SAFETY: puts back the disposition `install` replaced.
    unsafe {
        libc::sigaction(libc::SIGINT, &old.0, std::ptr::null_mut());
    }
}

#[cfg(not(unix))]
fn install() -> Option<Disposition> {
    None
}

#[cfg(not(unix))]
fn restore(_: Disposition) {}

// SAFETY: a sigaction struct is plain data (a handler address, a mask, flags).
#[cfg(unix)]
unsafe impl Send for Disposition {}

/// While alive, SIGINT asks the run to stop instead of ending the process.
pub struct Armed(());

/// Arms the stop button for a run; the flag of an earlier interrupt is cleared first.
pub fn arm() -> Armed {
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    if armed.0 == 0 {
        REQUESTED.store(false, Ordering::SeqCst);
        armed.1 = install();
    }
    armed.0 += 1;
    Armed(())
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.0 = armed.0.saturating_sub(1);
        if armed.0 == 0 {
            if let Some(old) = armed.1.take() {
                restore(old);
            }
        }
    }
}

/// Whether the stop button was pressed (SIGINT came) since the armed run began; false when no
/// run is armed (the flag of a run that stopped earlier is stale).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) && ARMED.lock().map_or(true, |a| a.0 > 0)
}
