//! Acceptance: when a process holding a TestServer is killed with SIGKILL, no postgres process
//! or data directory of it survives past the next TestServer start.
//!
//! The test binary re-executes itself to run `holder` (an ignored test, gated on an environment
//! variable) as the child process that holds the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{is_running, processes_in, wait_gone};
use pgdbm_testkit::{TestServer, TestServerOptions};

const ROLE: &str = "PGDBM_TESTKIT_HOLDER";

struct Held {
    child: Child,
    pid: u32,
    dir: PathBuf,
    port: u16,
}

const BASE: &str = "PGDBM_TESTKIT_HOLDER_BASE";

/// Starts a child test process holding a server; `mode` is `default` or `no-deathsig`;
/// `base` is the parent of its server directory (`None` = the default).
fn spawn_holder(mode: &str, base: Option<&Path>) -> Held {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["holder", "--exact", "--ignored", "--nocapture"])
        .env(ROLE, mode)
        .stdout(Stdio::piped());
    if let Some(base) = base {
        cmd.env(BASE, base);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("HOLDER "))
        .expect("the holder process ended without starting a server");
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap()
    };
    // Keep draining the pipe so the child never blocks on a full one.
    thread::spawn(move || lines.for_each(drop));
    Held {
        child,
        pid: field("pid").parse().unwrap(),
        dir: PathBuf::from(field("dir")),
        port: field("port").parse().unwrap(),
    }
}

/// The System V shared memory id a server recorded in line 7 of its postmaster.pid.
fn shared_memory_id(dir: &std::path::Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join("data/postmaster.pid")).ok()?;
    text.lines().nth(6)?.split_whitespace().nth(1)?.parse().ok()
}

/// Every System V shared memory id in use on this machine.
fn shared_memory_ids() -> Vec<i64> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

impl Drop for Held {
    fn drop(&mut self) {
        // On a failed assertion, do not leave the holder process running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reaps a private base directory when the test fails half-way (servers started there without
/// the death signal would otherwise outlive the test).
struct ReapOnPanic(PathBuf);

impl Drop for ReapOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            drop(TestServer::start_with(
                TestServerOptions::default().base_dir(&self.0),
            ));
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn sigkill(held: &mut Held) {
    held.child.kill().unwrap(); // SIGKILL
    held.child.wait().unwrap();
}

#[test]
fn sigkilled_holder_leaves_no_server_behind() {
    // 1. Default: the parent-death signal stops the server with its test process.
    let mut held = spawn_holder("default", None);
    assert!(is_running(held.pid), "the held server runs");
    assert!(held.dir.join("data").is_dir());
    sigkill(&mut held);
    assert!(
        wait_gone(held.pid, 10),
        "postmaster {} outlived the SIGKILL of its test process",
        held.pid
    );
    let next = TestServer::start().unwrap();
    assert!(
        !held.dir.exists(),
        "{} survived the next start",
        held.dir.display()
    );
    assert!(processes_in(&held.dir).is_empty());
    assert_eq!(next.psql("postgres", "SELECT 1").unwrap(), "1");

    // 2. Without the parent-death signal the server survives the kill, so the next start's
    //    reaper must kill it and delete its directory. A private base directory keeps the
    //    reapers of other test processes on this machine away from it.
    let base = std::env::temp_dir().join(format!("pgdbm-testkit-sigkill-{}", std::process::id()));
    let _reap = ReapOnPanic(base.clone());
    let mut held = spawn_holder("no-deathsig", Some(&base));
    assert!(held.dir.starts_with(&base));
    let shm = shared_memory_id(&held.dir);
    sigkill(&mut held);
    thread::sleep(Duration::from_millis(500));
    assert!(
        is_running(held.pid),
        "without the death signal the orphaned server still runs until reaped"
    );
    let next2 = TestServer::start_with(TestServerOptions::default().base_dir(&base)).unwrap();
    assert!(
        wait_gone(held.pid, 5),
        "postmaster {} survived the next TestServer start",
        held.pid
    );
    assert!(processes_in(&held.dir).is_empty());
    assert!(
        !held.dir.exists(),
        "{} survived the next start",
        held.dir.display()
    );
    if let Some(id) = shm {
        assert!(
            !shared_memory_ids().contains(&id),
            "shared memory segment {id} of the killed server was not removed"
        );
    }
    assert_ne!(next2.port(), 0);
    assert_eq!(next2.psql("postgres", "SELECT 2").unwrap(), "2");
    drop(next2);
    std::fs::remove_dir_all(&base).unwrap();
    let _ = held.port;
}

#[test]
#[ignore = "helper process of sigkilled_holder_leaves_no_server_behind"]
fn holder() {
    let Ok(mode) = std::env::var(ROLE) else {
        return;
    };
    let mut options = TestServerOptions::default().die_with_process(mode != "no-deathsig");
    if let Some(base) = std::env::var_os(BASE) {
        options = options.base_dir(base);
    }
    // Started from this short-lived test thread on purpose: the server must outlive the
    // thread that asked for it (it is spawned from a keeper thread).
    let server = thread::spawn(move || TestServer::start_with(options).unwrap())
        .join()
        .unwrap();
    println!(
        "HOLDER pid={} port={} dir={}",
        server.pid().unwrap(),
        server.port(),
        server.dir().unwrap().display()
    );
    loop {
        thread::sleep(Duration::from_secs(60));
    }
}
