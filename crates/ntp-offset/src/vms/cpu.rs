//! A VM's CPU time as the host accounts it: its cgroup's `cpu.stat` (microseconds, every thread
//! of the VM, libvirt's layout) where it has one, else its QEMU process's `stat` (clock ticks).

use std::fs;
use std::path::Path;

/// USER_HZ: the unit of /proc's CPU times, 100 on every architecture ntp-offset builds for.
const TICKS_PER_SEC: u64 = 100;

/// User plus system time of a whole process from its `/proc/PID/stat` text, in nanoseconds.
pub fn parse_stat(text: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces and parentheses itself.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * (1_000_000_000 / TICKS_PER_SEC))
}

/// `usage_usec` of a cgroup v2 `cpu.stat` text, in nanoseconds.
pub fn parse_cpu_stat(text: &str) -> Option<u64> {
    let usec: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some(usec * 1000)
}

/// A VM's CPU-time file, kept open: read again from its start each time (pread), which costs
/// a third of opening it afresh four times a second for every VM.
pub struct CpuReader {
    file: fs::File,
    cgroup: bool,
}

impl CpuReader {
    /// The VM's cgroup `cpu.stat` if it has one, else its process's `stat`.
    pub fn open(proc_root: &Path, pid: u32, cgroup: Option<&Path>) -> Option<CpuReader> {
        if let Some(dir) = cgroup {
            if let Ok(file) = fs::File::open(dir.join("cpu.stat")) {
                return Some(CpuReader { file, cgroup: true });
            }
        }
        let file = fs::File::open(proc_root.join(pid.to_string()).join("stat")).ok()?;
        Some(CpuReader {
            file,
            cgroup: false,
        })
    }

    /// The CPU time now, in nanoseconds (None once the process or cgroup is gone).
    pub fn read(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        if self.cgroup {
            parse_cpu_stat(text)
        } else {
            parse_stat(text)
        }
    }
}

/// The VM's CPU time now: from its cgroup if it has one, else from its process.
pub fn cpu_ns(proc_root: &Path, pid: u32, cgroup: Option<&Path>) -> Option<u64> {
    if let Some(dir) = cgroup {
        if let Some(ns) = fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|t| parse_cpu_stat(&t))
        {
            return Some(ns);
        }
    }
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names() {
        let line = "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 93211 0 11 0 1234 567 0 0 20 0 5 0 88123 2113929216 39612 18446744073709551615 1 1 0 0 0 0 0 4096 1 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat(line), Some((1234 + 567) * 10_000_000));
        let odd = "7 (a) b (c) S 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1\n";
        assert_eq!(parse_stat(odd), Some(11 * 10_000_000));
        assert_eq!(parse_stat("7 (short) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn cgroup_cpu_stat() {
        let text = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat(text), Some(123_456_000));
        assert_eq!(parse_cpu_stat("user_usec 1\n"), None);
    }

    /// A kept-open reader reads the same as a fresh one, again and again.
    #[test]
    fn a_kept_reader_rereads() {
        let pid = std::process::id();
        let r = CpuReader::open(Path::new("/proc"), pid, None).unwrap();
        let (a, b) = (r.read().unwrap(), r.read().unwrap());
        assert!(b >= a);
        assert!(cpu_ns(Path::new("/proc"), pid, None).unwrap() >= b);
    }

    /// This process's CPU time, read as a VM's would be, grows while it spins (in 10-ms
    /// ticks: spin until two have passed, at most 5 s).
    #[test]
    fn this_process_has_cpu_time() {
        let pid = std::process::id();
        let read = || cpu_ns(Path::new("/proc"), pid, None).expect("our own stat");
        let before = read();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while read() < before + 20_000_000 {
            assert!(std::time::Instant::now() < deadline, "no CPU time counted");
            for i in 0..100_000u64 {
                std::hint::black_box(i);
            }
        }
    }
}
