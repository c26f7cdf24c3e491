//! What a process costs and may use, read from Linux's `/proc`: its resident memory and
//! its open-files limit. The benchmark reports the first for held MQTT connections and
//! checks the second before opening them, so a run that cannot succeed says why at once
//! instead of failing thousands of connections one by one.

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// This process (`/proc/self`).
    Me,
    Pid(u32),
}

impl Proc {
    fn file(self, name: &str) -> String {
        match self {
            Proc::Me => format!("/proc/self/{name}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{name}"),
        }
    }
}

/// Resident memory in KiB (`VmRSS` of `/proc/PID/status`); `None` if the process is
/// gone or the field is missing (kernel threads have none).
pub fn resident_kib(proc: Proc) -> Option<u64> {
    let status = std::fs::read_to_string(proc.file("status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit on open files (`ulimit -n`), which is what `open` and `accept` run
/// into; `u64::MAX` when unlimited, `None` when it cannot be read.
pub fn open_files_limit(proc: Proc) -> Option<u64> {
    let limits = std::fs::read_to_string(proc.file("limits")).ok()?;
    parse_open_files_soft(&limits)
}

fn parse_open_files_soft(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
    {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resident_memory_and_the_soft_open_files_limit() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    1992 kB\n"),
            Some(1992)
        );
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files_soft(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_soft(unlimited), Some(u64::MAX));
    }

    #[test]
    fn this_process_is_readable() {
        assert!(resident_kib(Proc::Me).is_some_and(|kib| kib > 0));
        assert!(open_files_limit(Proc::Me).is_some_and(|n| n > 0));
    }
}
