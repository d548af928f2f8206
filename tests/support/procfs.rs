//! Processes as /proc shows them, for the tests and the soak bench (both include this file
//! with `#[path]`).

#![allow(dead_code)] // each includer uses a part of it

/// Field `n` (0 = the state) of `/proc/<pid>/stat` after the command name, or `None` if the
/// process is gone.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(n).map(str::to_string)
}

/// The pids of the processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let ppid: u32 = stat_field(child, 1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// When the process started (clock ticks after boot): with the pid, it names one process
/// even if the pid is reused later. `None` if it is gone.
pub fn started_at(pid: u32) -> Option<u64> {
    stat_field(pid, 19)?.parse().ok()
}

/// Whether a process is still there (a zombie counts: nobody reaped it).
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
