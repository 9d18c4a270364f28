//! Small measurement helpers: latency percentiles and the process's resident memory.

use std::time::Duration;

/// Percentiles of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    pub fn of(mut v: Vec<Duration>) -> Latency {
        if v.is_empty() {
            return Latency::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Latency {
            n: v.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "n {}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.n,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
pub fn peak_rss_kb() -> Option<u64> {
    status_kb("VmHWM:")
}

/// Current resident set size (`VmRSS`), in KiB.
pub fn rss_kb() -> Option<u64> {
    status_kb("VmRSS:")
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`), so the
/// next reading is the peak of what follows. False when the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time in seconds from `/proc` (clock ticks at the usual USER_HZ = 100).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU used so far by this process (gateway + benchmark client), in seconds.
pub fn process_cpu_secs() -> Option<f64> {
    stat_cpu_secs("/proc/self/stat")
}

/// CPU used so far by process `pid` (the model stub's child process), in seconds.
pub fn pid_cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

fn stat_cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Machine-wide CPU seconds so far: (busy, total), summed over cores.
pub fn machine_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: f64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some(((total - idle) / TICKS_PER_SEC, total / TICKS_PER_SEC))
}

/// CPU use over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// Seconds of CPU this process used.
    pub process: f64,
    /// Seconds of CPU the whole machine used (all processes, all cores).
    pub machine_busy: f64,
    /// Seconds of CPU the machine had (wall time × cores).
    pub machine_total: f64,
    /// Seconds of CPU the model stub's child process used, when it was measured.
    pub stub: Option<f64>,
}

/// Starts measuring CPU use; call `finish` on the result at the end of the phase.
pub struct CpuMeter {
    process: Option<f64>,
    machine: Option<(f64, f64)>,
    /// The stub's pid and its CPU seconds at the start.
    stub: Option<(u32, f64)>,
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter::with_stub(None)
    }

    /// Also measures the model stub's child process `stub_pid`.
    pub fn with_stub(stub_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            process: process_cpu_secs(),
            machine: machine_cpu_secs(),
            stub: stub_pid.and_then(|pid| Some((pid, pid_cpu_secs(pid)?))),
        }
    }

    /// CPU used since the start (may be called more than once).
    pub fn finish(&self) -> Option<CpuUse> {
        let (p0, (b0, t0)) = (self.process?, self.machine?);
        let (p1, (b1, t1)) = (process_cpu_secs()?, machine_cpu_secs()?);
        Some(CpuUse {
            process: p1 - p0,
            machine_busy: b1 - b0,
            machine_total: t1 - t0,
            stub: self
                .stub
                .and_then(|(pid, s0)| Some(pid_cpu_secs(pid)? - s0)),
        })
    }
}

impl CpuUse {
    /// e.g. `machine 97% busy; this process 41% of it, the rest (PostgreSQL, stub, others) 59%`.
    pub fn describe(&self) -> String {
        if self.machine_total <= 0.0 || self.machine_busy <= 0.0 {
            return "CPU use not measured".into();
        }
        let share = |secs: f64| secs / self.machine_busy * 100.0;
        let own = share(self.process);
        // Measured apart, the stub is named with its share; otherwise it is in the rest.
        let (stub, stub_in_rest) = match self.stub {
            Some(secs) => (format!("the stub {:.0}%, ", share(secs)), ""),
            None => (String::new(), "the stub, "),
        };
        format!(
            "CPU: machine {:.0}% busy; of that, this process (gateway + client) {:.0}%, {stub}the \
             rest (PostgreSQL, {stub_in_rest}anything else running) {:.0}%",
            self.machine_busy / self.machine_total * 100.0,
            own,
            100.0 - own - self.stub.map_or(0.0, share)
        )
    }

    /// Microseconds of CPU per item over `n` items: (whole machine, this process, the stub).
    pub fn per_item_us(&self, n: usize) -> Option<(f64, f64, Option<f64>)> {
        if n == 0 || self.machine_busy <= 0.0 {
            return None;
        }
        let us = |secs: f64| secs * 1e6 / n as f64;
        Some((us(self.machine_busy), us(self.process), self.stub.map(us)))
    }
}

/// `/proc/loadavg`'s 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `(after - before - own) / sent` for a database counter read around a phase, when both readings
/// exist and something was sent.
pub fn per_reply(before: Option<i64>, after: Option<i64>, own: i64, sent: i64) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if sent > 0 => Some((b - a - own) as f64 / sent as f64),
        _ => None,
    }
}

pub fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_reply_needs_both_readings_and_a_reply() {
        assert_eq!(per_reply(Some(10), Some(30), 4, 8), Some(2.0));
        assert_eq!(per_reply(None, Some(30), 0, 8), None);
        assert_eq!(per_reply(Some(10), Some(30), 0, 0), None);
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(v);
        assert_eq!(l.n, 100);
        assert_eq!(l.max, Duration::from_millis(100));
        assert!(l.p50 >= Duration::from_millis(50) && l.p50 <= Duration::from_millis(51));
        assert_eq!(l.p99, Duration::from_millis(99));
    }

    #[test]
    fn reads_own_memory() {
        assert!(peak_rss_kb().is_some_and(|k| k > 0));
        assert!(rss_kb().is_some_and(|k| k > 0));
        assert!(process_cpu_secs().is_some());
        assert!(machine_cpu_secs().is_some_and(|(b, t)| b > 0.0 && t >= b));
        let me = std::process::id();
        assert!(pid_cpu_secs(me).is_some());
        let used = CpuMeter::with_stub(Some(me)).finish();
        assert!(used.is_some_and(|u| u.stub.is_some()));
    }

    #[test]
    fn cpu_per_item() {
        let u = CpuUse {
            process: 2.0,
            machine_busy: 4.0,
            machine_total: 5.0,
            stub: Some(0.5),
        };
        assert_eq!(u.per_item_us(10_000), Some((400.0, 200.0, Some(50.0))));
        assert_eq!(u.per_item_us(0), None);
        assert!(u.describe().contains("the stub 12%"));
    }
}
