//! Server directories and reaping the ones left behind by killed test processes.
//!
//! Each server lives in `<base>/<pid>-<n>/` with an `owner` file holding the pid and start time
//! of the test process that created it. A directory whose owner is gone is stale: any server
//! process still running in it is killed and the directory is deleted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::{procfs, sys};

/// Name of the file recording which process owns a server directory.
pub(crate) const OWNER_FILE: &str = "owner";

/// A directory without an owner file is only considered stale after this long (it may be
/// being created right now).
const OWNERLESS_GRACE: Duration = Duration::from_secs(120);

/// The owner line for this process: `<pid> <start time>`.
pub(crate) fn owner_line() -> String {
    format!(
        "{} {}\n",
        std::process::id(),
        procfs::own_start_time().unwrap_or(0)
    )
}

/// Reaps every stale server directory under `base`. Best effort: errors (for example
/// directories of other users) are skipped.
pub(crate) fn reap_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) && is_stale(&dir) {
            reap_dir(&dir);
        }
    }
}

/// True when the process that created `dir` no longer runs.
pub(crate) fn is_stale(dir: &Path) -> bool {
    match fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(text) => {
            let mut parts = text.split_whitespace();
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            let start = parts.next().and_then(|s| s.parse::<u64>().ok());
            match (pid, start) {
                (Some(pid), Some(start)) if start != 0 => !procfs::is_same_running(pid, start),
                (Some(pid), _) => !procfs::is_running(pid),
                _ => older_than(dir, OWNERLESS_GRACE),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => older_than(dir, OWNERLESS_GRACE),
        Err(_) => false,
    }
}

fn older_than(dir: &Path, age: Duration) -> bool {
    fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Kills every server process of `dir` and deletes it.
pub(crate) fn reap_dir(dir: &Path) {
    kill_server_processes(dir);
    remove_orphaned_shared_memory(&dir.join("data"));
    let _ = fs::remove_dir_all(dir);
}

/// A postmaster killed by SIGKILL leaves its small System V shared memory segment behind
/// (line 7 of `postmaster.pid`: key and id). Removes it with `ipcrm` when a segment with that
/// key *and* id still exists and nobody is attached to it.
fn remove_orphaned_shared_memory(data_dir: &Path) {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some((key, id)) = text.lines().nth(6).and_then(|line| {
        let mut parts = line.split_whitespace().map(|p| p.parse::<i64>().ok());
        Some((parts.next()??, parts.next()??))
    }) else {
        return;
    };
    let Ok(table) = fs::read_to_string("/proc/sysvipc/shm") else {
        return;
    };
    // Columns: key shmid perms size cpid lpid nattch ...
    let orphaned = table.lines().skip(1).any(|line| {
        let cols: Vec<i64> = line
            .split_whitespace()
            .take(7)
            .filter_map(|c| c.parse().ok())
            .collect();
        cols.len() == 7 && cols[0] == key && cols[1] == id && cols[6] == 0
    });
    if orphaned {
        let _ = std::process::Command::new("ipcrm")
            .args(["-m", &id.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// SIGKILLs the postmaster recorded in `dir/data/postmaster.pid` (when it is a process working
/// in that directory) and every other process whose current directory is inside `dir`, then
/// waits up to 5 s for them to be gone.
pub(crate) fn kill_server_processes(dir: &Path) {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut pids = procfs::processes_in(&dir);
    if let Some(pid) = postmaster_pid(&dir.join("data")) {
        let works_here = procfs::cwd(pid).is_some_and(|c| c.starts_with(&dir));
        if works_here && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    for pid in &pids {
        let _ = sys::send_signal(*pid, sys::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| procfs::is_running(*p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

/// The postmaster pid from `data_dir/postmaster.pid` (its first line).
pub(crate) fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The base directory for this user's server directories: `/dev/shm/pgdbm-testkit-<uid>` when
/// `/dev/shm` exists (tmpfs: `CREATE DATABASE ... TEMPLATE` is several times faster there),
/// else `<temp>/pgdbm-testkit-<uid>` on the disk. Logs which.
pub(crate) fn default_base_dir() -> PathBuf {
    let name = format!("pgdbm-testkit-{}", sys::geteuid());
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tracing::info!(target: "pgdbm::testkit", base = %shm.join(&name).display(),
            "throwaway server data on tmpfs (/dev/shm)");
        shm.join(name)
    } else {
        let base = std::env::temp_dir().join(name);
        tracing::info!(target: "pgdbm::testkit", base = %base.display(),
            "no /dev/shm: throwaway server data on the disk (database clones are slower)");
        base
    }
}
