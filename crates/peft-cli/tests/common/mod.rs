//! What every `peft` command test needs: running the binary and checking a handled failure.
#![allow(dead_code)]
use std::path::Path;
use std::process::{Command, Output};

/// Runs the `peft` binary.
pub fn peft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peft")).args(args).output().expect("the binary runs")
}

/// A handled failure: exit status 1, one `error: ` line containing `needle`, no file at `target`.
pub fn assert_fails(out: &Output, needle: &str, target: &Path) {
    assert!(!out.status.success(), "expected failure");
    assert_eq!(out.status.code(), Some(1), "a panic or usage error, not a handled error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{stderr}");
    assert!(!target.exists(), "a failed command left {}", target.display());
}
