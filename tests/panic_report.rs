//! `hw9::report_panics_whole`: the report is one write with the location and the whole message.

use std::process::Command;

/// Runs in a child process (this test binary re-invoked): installs the hook and panics.
#[test]
fn child_panics_with_the_hook() {
    if std::env::var_os("HW9_PANIC_CHILD").is_none() {
        return;
    }
    hw9::report_panics_whole();
    hw9::report_panics_whole(); // a second call (a rerun setup cell) changes nothing
    panic!("TODO: line one\nline two");
}

#[test]
fn the_report_names_the_place_and_the_whole_message() {
    let out = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "child_panics_with_the_hook", "--nocapture", "--test-threads=1"])
        .env("HW9_PANIC_CHILD", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("re-running the test binary");
    assert!(!out.status.success(), "the child was meant to panic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start = stderr.find("thread '").expect("a panic report on stderr");
    let report = &stderr[start..];
    let expected_head = "' panicked at tests/panic_report.rs:";
    assert!(report.contains(expected_head), "report: {report}");
    assert!(report.contains(":\nTODO: line one\nline two\n"), "report: {report}");
    // Exactly one report (the hook replaced the default one, not added to it), no backtrace.
    assert_eq!(stderr.matches("panicked at").count(), 1, "stderr: {stderr}");
    assert!(!stderr.contains("stack backtrace"), "stderr: {stderr}");
}
