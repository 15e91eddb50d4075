//! Helpers shared by the integration tests: process inspection through /proc.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// True when `pid` runs (a zombie only waits to be reaped and counts as gone).
pub(crate) fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    state != "Z" && state != "X"
}

/// Waits up to `secs` seconds for `pid` to be gone; true when it is.
pub(crate) fn wait_gone(pid: u32, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while is_running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Running processes whose current directory is inside `dir` (every postgres process of a
/// server works in its data directory).
pub(crate) fn processes_in(dir: &Path) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| {
                let c = c.to_string_lossy();
                let c = PathBuf::from(c.strip_suffix(" (deleted)").unwrap_or(&c));
                c.starts_with(dir)
            })
        })
        .filter(|pid| is_running(*pid))
        .collect()
}

/// The real uid of process `pid`.
pub(crate) fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The uid of this process.
pub(crate) fn own_uid() -> u32 {
    uid_of(std::process::id())
}

/// The uid of the `postgres` system user.
pub(crate) fn postgres_uid() -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Starts this test binary again as a child running only the ignored test `test`, with
/// `child_env=1` and `server` as its `TEST_DB_HOST` (so what it creates is on this test's
/// private server), stdout piped for the parent to read.
pub(crate) fn spawn_test_child(
    test: &str,
    child_env: &str,
    server: &pgdbm_testkit::TestServer,
) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--ignored", "--nocapture"])
        .env(child_env, "1")
        .env("TEST_DB_HOST", "127.0.0.1")
        .env("TEST_DB_PORT", server.port().to_string())
        .env("TEST_DB_USER", "postgres")
        .env("TEST_DB_PASSWORD", server.password().unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
