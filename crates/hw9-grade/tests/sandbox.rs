//! The sandbox the grader runs students' code in (hw9_grade::sandbox): each hostile program ends
//! with a clear outcome within its limits — never a hang, never a crash of the grader — and
//! sees nothing it was not given. Needs bubblewrap (`apt-get install bubblewrap`); without it
//! every test says so and fails, unless HW9_SKIP_SANDBOX=1 (a machine that cannot make
//! namespaces), which the run prints.

use std::path::Path;
use std::time::{Duration, Instant};

use hw9_grade::sandbox::{self, Ended, Limits, Mounts};

fn ready() -> bool {
    match sandbox::available() {
        Ok(()) => true,
        Err(why) if std::env::var("HW9_SKIP_SANDBOX").is_ok_and(|v| v == "1") => {
            eprintln!("SKIPPED (HW9_SKIP_SANDBOX=1): {why}");
            false
        }
        Err(why) => panic!("{why} (set HW9_SKIP_SANDBOX=1 to skip on a machine that cannot make namespaces)"),
    }
}

/// Each test its own uid, so the per-uid process limit of one does not count another's.
fn limits(uid: u32) -> Limits {
    Limits { wall: Duration::from_secs(20), cpu_seconds: 10, uid, ..Limits::default() }
}

fn sh(script: &str, mounts: &Mounts, limits: &Limits) -> sandbox::Outcome {
    sandbox::run(Path::new("/bin/sh"), &["-c".to_string(), script.to_string()], mounts, Path::new("/tmp"), &[], limits)
        .expect("the sandbox starts")
}

#[test]
fn a_plain_program_runs_and_its_output_comes_back() {
    if !ready() {
        return;
    }
    let out = sh("echo hello; echo oops >&2; exit 3", &Mounts::default(), &limits(64_101));
    assert_eq!(out.ended, Ended::Exited(3));
    assert_eq!(out.stdout.trim(), "hello");
    assert_eq!(out.stderr.trim(), "oops");
}

#[test]
fn an_endless_loop_is_stopped_at_the_wall_clock_limit() {
    if !ready() {
        return;
    }
    let l = Limits { wall: Duration::from_secs(2), ..limits(64_102) };
    let t = Instant::now();
    let out = sh("while :; do :; done", &Mounts::default(), &l);
    assert_eq!(out.ended, Ended::WallTimeout, "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(6), "stopped in {:?}", t.elapsed());
    assert!(out.describe(&l).contains("endless loop"));
}

#[test]
fn a_loop_that_forks_into_the_background_is_stopped_too() {
    if !ready() {
        return;
    }
    // The child escapes into its own session; the pid namespace still takes it down.
    let l = Limits { wall: Duration::from_secs(2), ..limits(64_103) };
    let t = Instant::now();
    let out = sh("setsid sh -c 'while :; do :; done' & wait", &Mounts::default(), &l);
    assert_eq!(out.ended, Ended::WallTimeout);
    assert!(t.elapsed() < Duration::from_secs(6), "stopped in {:?}", t.elapsed());
}

#[test]
fn cpu_time_is_limited() {
    if !ready() {
        return;
    }
    let l = Limits { cpu_seconds: 1, wall: Duration::from_secs(30), ..limits(64_104) };
    let out = sh("while :; do :; done", &Mounts::default(), &l);
    assert!(matches!(out.ended, Ended::Signal(24) | Ended::Signal(9)), "{out:?}");
    assert!(out.wall < Duration::from_secs(10));
}

#[test]
fn a_fork_bomb_is_contained() {
    if !ready() {
        return;
    }
    // Only a root grader can give the sandbox a uid of its own (and so a process limit).
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the process limit is not applied (see hw9_grade::sandbox)");
        return;
    }
    let l = Limits { processes: 64, wall: Duration::from_secs(5), ..limits(64_105) };
    let t = Instant::now();
    let out = sh("bomb() { bomb | bomb & }; bomb; sleep 3; echo alive", &Mounts::default(), &l);
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(out.ended != Ended::Exited(0) || out.stdout.contains("alive"), "{out:?}");
    // The machine still forks.
    assert!(std::process::Command::new("true").status().expect("fork after the bomb").success());
}

#[test]
fn a_huge_allocation_fails_inside() {
    if !ready() {
        return;
    }
    let l = Limits { memory_bytes: 512 << 20, ..limits(64_106) };
    let out = sandbox::run(
        Path::new("/usr/bin/python3"),
        &["-c".into(), "b = bytearray(4 << 30); print('allocated')".into()],
        &Mounts::default(),
        Path::new("/tmp"),
        &[],
        &l,
    )
    .expect("the sandbox starts");
    assert!(!out.stdout.contains("allocated"), "{out:?}");
    assert!(out.stderr.contains("MemoryError"), "{out:?}");
}

#[test]
fn files_not_given_do_not_exist_and_nothing_outside_is_writable() {
    if !ready() {
        return;
    }
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("expected_answers.safetensors");
    std::fs::write(&secret, b"the answers").expect("write");
    let work = tempfile::tempdir().expect("tempdir");
    // The sandbox's uid must be able to write its folder.
    let mut l = limits(64_107);
    l.uid = 64_107;
    std::process::Command::new("chown").arg("-R").arg("64107:64107").arg(work.path()).status().ok();
    let m = Mounts { rw: vec![work.path().to_path_buf()], ..Mounts::default() };
    let script = format!(
        "cat {s} && echo READ; ls {d} && echo LISTED; touch {w}/ok && echo WROTE; touch /tmp/scratch && echo TMP_OK; touch /usr/evil || echo NO_USR; \
         touch {d}/evil || echo NO_SECRET_DIR; cat /root/.bashrc >/dev/null 2>&1 || echo NO_ROOT",
        s = secret.display(),
        d = secret_dir.path().display(),
        w = work.path().display()
    );
    let out = sh(&script, &m, &l);
    assert!(!out.stdout.contains("READ") && !out.stdout.contains("LISTED"), "{out:?}");
    assert!(out.stdout.contains("WROTE") && out.stdout.contains("TMP_OK"), "{out:?}");
    assert!(out.stdout.contains("NO_USR") && out.stdout.contains("NO_SECRET_DIR"), "{out:?}");
    assert!(work.path().join("ok").exists());
    assert!(!secret_dir.path().join("evil").exists());
    assert_eq!(std::fs::read(&secret).expect("still there"), b"the answers");
}

#[test]
fn there_is_no_network() {
    if !ready() {
        return;
    }
    let code = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=3); print('CONNECTED')\n\
                except OSError as e:\n    print('NO_NETWORK', e)";
    let out = sandbox::run(
        Path::new("/usr/bin/python3"),
        &["-c".into(), code.into()],
        &Mounts::default(),
        Path::new("/tmp"),
        &[],
        &limits(64_108),
    )
    .expect("the sandbox starts");
    assert!(out.stdout.contains("NO_NETWORK") && !out.stdout.contains("CONNECTED"), "{out:?}");
}

#[test]
fn endless_output_is_cut_at_the_limit() {
    if !ready() {
        return;
    }
    let l = Limits { output_bytes: 1 << 16, wall: Duration::from_secs(3), ..limits(64_109) };
    let out = sh("yes hello", &Mounts::default(), &l);
    assert!(out.truncated);
    assert!(out.stdout.len() <= 1 << 16);
}

#[test]
fn a_crash_is_reported_by_its_signal() {
    if !ready() {
        return;
    }
    let out = sh("kill -SEGV $$", &Mounts::default(), &limits(64_110));
    assert_eq!(out.ended, Ended::Signal(11), "{out:?}");
    assert!(out.describe(&limits(64_110)).contains("SIGSEGV"));
}
