//! Process inspection through `/proc` (Linux), used to tell live owners from dead ones and to
//! find leftover server processes.

use std::fs;
use std::path::{Path, PathBuf};

/// The start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot) and the state
/// letter of process `pid`, or `None` when there is no such process.
pub(crate) fn stat(pid: u32) -> Option<(u64, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field 22 is at index 19.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Start time of this process, as in [`stat`].
pub(crate) fn own_start_time() -> Option<u64> {
    stat(std::process::id()).map(|(start, _)| start)
}

/// True when `pid` is a running process (zombies, which only wait to be reaped, count as gone).
pub(crate) fn is_running(pid: u32) -> bool {
    match stat(pid) {
        Some((_, state)) => !matches!(state, 'Z' | 'X' | 'x'),
        None => false,
    }
}

/// True when process `pid` runs with start time `start` (same pid, not a reused one).
pub(crate) fn is_same_running(pid: u32, start: u64) -> bool {
    matches!(stat(pid), Some((s, state)) if s == start && !matches!(state, 'Z' | 'X' | 'x'))
}

/// The current directory of `pid`, if readable. A deleted directory keeps its old path with a
/// ` (deleted)` suffix, which is removed here.
pub(crate) fn cwd(pid: u32) -> Option<PathBuf> {
    let link = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let text = link.to_string_lossy();
    Some(match text.strip_suffix(" (deleted)") {
        Some(stripped) => PathBuf::from(stripped),
        None => link,
    })
}

/// Every running process whose current directory is `dir` or below it. PostgreSQL's postmaster
/// and all its backends run with the data directory as their current directory, so this finds
/// a server's processes even after its postmaster was killed.
pub(crate) fn processes_in(dir: &Path) -> Vec<u32> {
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| cwd(*pid).is_some_and(|c| c.starts_with(dir)))
        .filter(|pid| is_running(*pid))
        .collect()
}
