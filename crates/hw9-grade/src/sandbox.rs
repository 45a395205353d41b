//! Running a student's code where it can do no harm: [bubblewrap](https://github.com/containers/bubblewrap)
//! (`bwrap`) for the namespaces and mounts, POSIX resource limits for the rest.
//!
//! Why bubblewrap: it is the sandbox Flatpak ships to millions of desktops, packaged everywhere
//! (`apt install bubblewrap`: Debian, Ubuntu — Gradescope's images), one small setuid-free binary,
//! and needs no daemon. The alternatives: nsjail builds from source with protobuf; Docker or
//! podman need a daemon or a runtime inside Gradescope's own container; namespaces by hand
//! (`unshare` + `clone` + landlock through a crate) is what bwrap already is, tested.
//!
//! What the code inside sees and may do:
//! - **files**: only the paths the caller lists, read-only (the toolchain, libtorch, the
//!   harness) and read-write (a build's target folder); `/usr`, `/etc` read-only; a private
//!   `/tmp` of at most [`Limits::tmp_bytes`]; a fresh `/proc` and `/dev`. The grader's own files
//!   (reference answers, hidden cases, other students' uploads) are not mounted, so they do not
//!   exist inside.
//! - **network**: none (a network namespace with only a loopback that is down).
//! - **user**: when the grader runs as root (Gradescope runs `run_autograder` as root), the code
//!   runs as an unprivileged uid ([`Limits::uid`], no capabilities, `setpriv`), so the process
//!   limit holds and root's files are closed to it. A grader run by a TA's own account runs it in
//!   a user namespace under that account instead (bubblewrap's unprivileged mode).
//! - **limits**: CPU seconds, wall seconds (the whole process group is killed), address space,
//!   processes and threads of its uid, the size of a file it writes, open files, no core dumps;
//!   its stdout and stderr are read up to [`Limits::output_bytes`] each and the rest is dropped.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The limits a sandboxed command runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// CPU seconds (SIGXCPU, then SIGKILL a second later).
    pub cpu_seconds: u64,
    /// Wall-clock limit: the sandbox is killed after it.
    pub wall: Duration,
    /// Address space in bytes (`RLIMIT_AS`): a huge allocation fails inside.
    pub memory_bytes: u64,
    /// Processes and threads of the sandbox's uid (`RLIMIT_NPROC`; root grader only).
    pub processes: u64,
    /// The largest file it may write (`RLIMIT_FSIZE`).
    pub file_bytes: u64,
    /// Its private `/tmp`.
    pub tmp_bytes: u64,
    /// Stdout and stderr are each kept up to this many bytes.
    pub output_bytes: usize,
    /// The uid and gid it runs as when the grader is root.
    pub uid: u32,
    /// Whether to drop to [`Limits::uid`] (root grader). Off for a build, which runs no code of
    /// the student's (only the compiler and the trusted crates' build scripts) and writes the
    /// grader's warm target folder; on for everything that runs the student's code.
    pub drop_privileges: bool,
}

impl Default for Limits {
    /// Enough for a notebook's checks (a few seconds of CPU, ~1 GB of libtorch's address space)
    /// with room to spare; see BENCHMARKS.md ("Grading by re-running").
    fn default() -> Self {
        Limits {
            cpu_seconds: 120,
            wall: Duration::from_secs(90),
            memory_bytes: 8 << 30,
            processes: 256,
            file_bytes: 256 << 20,
            tmp_bytes: 512 << 20,
            output_bytes: 8 << 20,
            uid: 64_000,
            drop_privileges: true,
        }
    }
}

/// What the sandbox may see: `ro` read-only and `rw` read-write, each at the same path inside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mounts {
    /// Read-only paths.
    pub ro: Vec<PathBuf>,
    /// Read-write paths (owned by, or writable for, [`Limits::uid`]).
    pub rw: Vec<PathBuf>,
    /// Read-only `(source, place inside)`, bound after the others (so one can cover a folder
    /// inside a read-write one).
    pub ro_at: Vec<(PathBuf, PathBuf)>,
    /// Empty writable folders (a tmpfs each, gone with the sandbox), made before the binds so a
    /// read-only bind can sit inside one.
    pub scratch: Vec<PathBuf>,
}

/// How a sandboxed command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it (SIGSEGV, SIGABRT from a stack overflow, SIGKILL at the CPU limit…).
    Signal(i32),
    /// It ran past the wall-clock limit and was killed.
    WallTimeout,
}

/// A sandboxed command's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How it ended.
    pub ended: Ended,
    /// Its stdout (up to the limit; lossy UTF-8).
    pub stdout: String,
    /// Its stderr (up to the limit).
    pub stderr: String,
    /// Whether either stream was cut at the limit.
    pub truncated: bool,
    /// Wall-clock time.
    pub wall: Duration,
    /// The largest resident set of any process the grader has waited for so far, this one's
    /// included (`getrusage(RUSAGE_CHILDREN)`: a high-water mark over the grader's life).
    pub peak_rss_bytes: u64,
}

impl Outcome {
    /// A one-line account of how it ended, for feedback.
    pub fn describe(&self, limits: &Limits) -> String {
        match &self.ended {
            Ended::Exited(0) => "finished".into(),
            Ended::Exited(c) => format!("exited with status {c}"),
            Ended::WallTimeout => {
                format!("still running after {} s of wall time (an endless loop?): stopped", limits.wall.as_secs())
            }
            Ended::Signal(9) if self.wall.as_secs_f64() >= 1.0 => {
                format!("killed (SIGKILL): past the limit of {} CPU seconds, or of memory", limits.cpu_seconds)
            }
            Ended::Signal(s) => format!("killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        4 => "SIGILL",
        6 => "SIGABRT: an abort, e.g. a stack overflow or an allocation that failed",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV: a bad memory access, e.g. a stack overflow",
        24 => "SIGXCPU: past the CPU-time limit",
        25 => "SIGXFSZ: a file larger than allowed",
        _ => "a signal",
    }
}

/// Whether `bwrap` runs here (installed, and allowed to make namespaces).
pub fn available() -> std::result::Result<(), String> {
    let out = Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--unshare-net", "--", "true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("bwrap cannot make a sandbox here: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("bwrap is not installed ({e}); install it: apt-get install bubblewrap")),
    }
}

/// The largest resident set of any child process this process has waited for, in bytes
/// (`getrusage(RUSAGE_CHILDREN)`; descendants count through their parents).
pub fn peak_children_rss() -> u64 {
    // SAFETY: getrusage only writes into the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) == 0 {
            usage.ru_maxrss.max(0) as u64 * 1024
        } else {
            0
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The bwrap arguments for `mounts`, before the command.
fn bwrap_args(mounts: &Mounts, limits: &Limits, cwd: &Path, env: &[(String, String)]) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
    if !is_root() {
        push(&["--unshare-user", "--uid", "65534", "--gid", "65534"]);
    }
    push(&["--die-with-parent", "--new-session", "--hostname", "sandbox"]);
    push(&["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
    for top in ["/bin", "/sbin", "/lib", "/lib64", "/lib32"] {
        let p = Path::new(top);
        match std::fs::read_link(p) {
            Ok(target) => push(&["--symlink", &target.to_string_lossy(), top]),
            Err(_) if p.is_dir() => push(&["--ro-bind", top, top]),
            Err(_) => {}
        }
    }
    let tmp = limits.tmp_bytes.to_string();
    push(&["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", &tmp, "--tmpfs", "/tmp"]);
    // The folders above each mount, traversable by the sandbox's uid (bwrap makes them 0700
    // when it runs as root).
    let mut above: Vec<PathBuf> = mounts
        .ro
        .iter()
        .chain(&mounts.rw)
        .chain(mounts.ro_at.iter().map(|(_, dest)| dest))
        .chain(&mounts.scratch)
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|p| p.components().count() > 1 && !p.starts_with("/usr") && !p.starts_with("/etc"))
        .collect();
    above.sort_by_key(|p| (p.components().count(), p.clone()));
    above.dedup();
    for dir in &above {
        push(&["--perms", "0755", "--dir", &dir.to_string_lossy()]);
    }
    for p in &mounts.scratch {
        push(&["--perms", "0777", "--tmpfs", &p.to_string_lossy()]);
    }
    for p in &mounts.ro {
        let s = p.to_string_lossy();
        push(&["--ro-bind", &s, &s]);
    }
    for p in &mounts.rw {
        let s = p.to_string_lossy();
        push(&["--bind", &s, &s]);
    }
    for (src, dest) in &mounts.ro_at {
        push(&["--ro-bind", &src.to_string_lossy(), &dest.to_string_lossy()]);
    }
    push(&["--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]);
    push(&["--setenv", "TMPDIR", "/tmp"]);
    for (k, v) in env {
        push(&["--setenv", k, v]);
    }
    push(&["--chdir", &cwd.to_string_lossy()]);
    a
}

/// Runs `program args` in a sandbox with `mounts` (the program and everything it reads must be
/// among them), in `cwd`, with `env` (nothing else of the grader's environment), under `limits`.
pub fn run(
    program: &Path,
    args: &[String],
    mounts: &Mounts,
    cwd: &Path,
    env: &[(String, String)],
    limits: &Limits,
) -> Result<Outcome> {
    let mut cmd = Command::new("bwrap");
    cmd.args(bwrap_args(mounts, limits, cwd, env)).arg("--");
    if is_root() && limits.drop_privileges {
        // Inside the namespaces, drop to the sandbox's uid for good before the program runs.
        let id = limits.uid.to_string();
        cmd.args([
            "setpriv",
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]);
        cmd.arg("--no-new-privs");
    }
    cmd.arg(program).args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let l = limits.clone();
    // SAFETY: the closure only calls setrlimit and setsid, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let set = |res, soft: u64, hard: u64| {
                let r = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
                if libc::setrlimit(res, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 1)?;
            set(libc::RLIMIT_AS, l.memory_bytes, l.memory_bytes)?;
            set(libc::RLIMIT_FSIZE, l.file_bytes, l.file_bytes)?;
            set(libc::RLIMIT_NOFILE, 256, 256)?;
            set(libc::RLIMIT_CORE, 0, 0)?;
            if libc::geteuid() == 0 && l.drop_privileges {
                // Counted per uid: the sandbox's own, which nothing else uses.
                set(libc::RLIMIT_NPROC, l.processes, l.processes)?;
            }
            libc::setsid();
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::Input(format!("cannot start bwrap ({e}); install bubblewrap")))?;
    let pid = child.id() as i32;
    let cap = limits.output_bytes;
    let reader = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut cut = false;
            if let Some(mut s) = stream {
                let mut buf = [0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = cap.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                            cut |= n > room;
                        }
                    }
                }
            }
            (kept, cut)
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().map_err(|e| Error::Input(format!("waiting for the sandbox: {e}")))? {
            Some(status) => break status,
            None if started.elapsed() > limits.wall => {
                timed_out = true;
                // The whole session (bwrap, the program, anything it forked).
                // SAFETY: kill with a negative pid signals the process group we made with setsid.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = child.kill();
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let wall = started.elapsed();
    let (stdout, cut_out) = out.join().unwrap_or_default();
    let (stderr, cut_err) = err.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let ended = if timed_out {
        Ended::WallTimeout
    } else if let Some(code) = status.code() {
        // bwrap reports its child's death by a signal as 128 + the signal.
        if code > 128 && code < 160 {
            Ended::Signal(code - 128)
        } else {
            Ended::Exited(code)
        }
    } else {
        Ended::Signal(status.signal().unwrap_or(0))
    };
    let peak_rss_bytes = peak_children_rss();
    Ok(Outcome {
        peak_rss_bytes,
        ended,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        truncated: cut_out || cut_err,
        wall,
    })
}
