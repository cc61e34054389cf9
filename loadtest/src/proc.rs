//! A process's CPU time and memory from Linux's `/proc` (no libc: the workspace forbids
//! unsafe code).

use std::io;

/// CPU time (user + system) of process `pid` (a number, or `self`), in clock ticks.
pub fn cpu_ticks(pid: &str) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS in /proc/{pid}/status"),
        )
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's value, if that cannot run).
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// CPU time spent over a measured window by the server (when its pid is known) and by the load
/// tool itself.
#[derive(Debug)]
pub struct Window {
    server_pid: Option<String>,
    server_start: Option<u64>,
    own_start: Option<u64>,
}

/// What a [`Window`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The server's CPU time in the window, seconds.
    pub server_cpu_seconds: Option<f64>,
    /// The server's resident memory at the window's end, bytes.
    pub server_rss_bytes: Option<u64>,
    /// The load tool's CPU time in the window, seconds.
    pub loadtest_cpu_seconds: Option<f64>,
}

impl Window {
    /// Starts measuring now; the server's counters must be readable if its pid is given.
    pub fn open(server_pid: Option<u32>) -> io::Result<Self> {
        let server_pid = server_pid.map(|pid| pid.to_string());
        let server_start = server_pid.as_deref().map(cpu_ticks).transpose()?;
        Ok(Self {
            server_pid,
            server_start,
            own_start: cpu_ticks("self").ok(),
        })
    }

    /// Ends the window.
    pub fn close(self) -> io::Result<Usage> {
        let ticks = ticks_per_second() as f64;
        let server_cpu = match (&self.server_pid, self.server_start) {
            (Some(pid), Some(before)) => Some(cpu_ticks(pid)?.saturating_sub(before)),
            _ => None,
        };
        let own_cpu = self
            .own_start
            .and_then(|before| Some(cpu_ticks("self").ok()? - before));
        Ok(Usage {
            server_cpu_seconds: server_cpu.map(|t| t as f64 / ticks),
            server_rss_bytes: self.server_pid.as_deref().map(rss_bytes).transpose()?,
            loadtest_cpu_seconds: own_cpu.map(|t| t as f64 / ticks),
        })
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is the 12th of those.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:  1234 kB` in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (veza (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 \
                    100 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some(325));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tveza\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t9\n";
        assert_eq!(parse_rss(status), Some(1234 * 1024));
        assert_eq!(parse_rss("Name:\tveza\n"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(rss_bytes("self").unwrap() > 0);
        cpu_ticks("self").unwrap();
        assert!(ticks_per_second() > 0);
    }
}
