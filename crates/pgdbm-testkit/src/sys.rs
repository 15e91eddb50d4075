//! The few libc calls the testkit needs, each wrapped in a safe function.
//!
//! This is the only place with `unsafe` code; every function allows it for itself only and says
//! why it is sound.

use std::io;
use std::process::Command;

/// Signal numbers used by the testkit.
pub(crate) use libc::{SIGINT, SIGKILL, SIGQUIT};

/// The effective user id of this process.
#[allow(unsafe_code)]
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `signal` to the single process `pid` (never to a process group: `pid` must be > 0).
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions; pid > 0 addresses exactly one process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the child started by `cmd` receive `signal` when the thread that spawns it exits
/// (Linux `PR_SET_PDEATHSIG`), so a server dies with the test process even on SIGKILL.
///
/// The kernel clears the parent-death signal when credentials change; std runs `pre_exec`
/// closures after it applied `Command::uid`/`gid`, so setting it here survives the switch to the
/// `postgres` user. The closure also checks that the parent did not die before the signal was
/// armed (it would never fire then).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut Command, signal: i32) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    let signal = libc::c_ulong::try_from(signal).unwrap_or(libc::SIGKILL as libc::c_ulong);
    // SAFETY: the closure runs in the forked child before exec. It only calls prctl and getppid
    // (both async-signal-safe), allocates nothing (io::Error::last_os_error and
    // from_raw_os_error do not allocate) and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                // The parent died between fork and prctl: do not start an orphan server.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Parent-death signals exist on Linux only; elsewhere stale servers are left to the reaper.
#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_cmd: &mut Command, _signal: i32) {}

/// Registers `f` to run at normal process exit (`atexit`). Returns false if that failed.
#[allow(unsafe_code)]
pub(crate) fn at_exit(f: extern "C" fn()) -> bool {
    // SAFETY: `f` is a plain `extern "C" fn()` that lives for the whole program; atexit only
    // stores the pointer.
    unsafe { libc::atexit(f) == 0 }
}
