//! What the agent reports about its host in each heartbeat, read from
//! Linux's `/proc` and the root file system (elsewhere the fields stay
//! empty: a heartbeat without metrics is still a heartbeat).

use edgelink_protocol::heartbeat::Heartbeat;

/// CPU time counters from `/proc/stat`: (busy, total) jiffies.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    // idle + iowait are not busy.
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// (total, available) memory in bytes from `/proc/meminfo`.
fn memory(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// The one-minute load average from `/proc/loadavg`.
fn load_1m(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// (received, sent) bytes over all interfaces but loopback, `/proc/net/dev`.
fn network(dev: &str) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut any = false;
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        if v.len() >= 9 {
            rx = rx.saturating_add(v[0]);
            tx = tx.saturating_add(v[8]);
            any = true;
        }
    }
    any.then_some((rx, tx))
}

/// Samples the host; CPU use is measured between two calls, so the sampler
/// keeps the last counters.
#[derive(Debug, Default)]
pub struct Sampler {
    last_cpu: Option<(u64, u64)>,
}

impl Sampler {
    /// A heartbeat with what this host reports now.
    pub fn sample(&mut self, uptime_secs: u64) -> Heartbeat {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = cpu_times(&read("/proc/stat"));
        let cpu_percent = match (self.last_cpu, cpu) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some(100.0 * (b1 - b0) as f64 / (t1 - t0) as f64),
            _ => None,
        };
        self.last_cpu = cpu;
        let mem = memory(&read("/proc/meminfo"));
        let net = network(&read("/proc/net/dev"));
        let disk = rustix::fs::statvfs("/").ok().map(|s| {
            let block = s.f_frsize;
            (s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(block), s.f_blocks.saturating_mul(block))
        });
        Heartbeat {
            cpu_percent,
            memory_used_bytes: mem.map(|(total, avail)| total.saturating_sub(avail)),
            memory_total_bytes: mem.map(|(total, _)| total),
            uptime_secs: Some(uptime_secs),
            agent_version: Some(env!("CARGO_PKG_VERSION").into()),
            load_1m: load_1m(&read("/proc/loadavg")),
            disk_used_bytes: disk.map(|d| d.0),
            disk_total_bytes: disk.map(|d| d.1),
            network_in_bytes: net.map(|n| n.0),
            network_out_bytes: net.map(|n| n.1),
            status: Some("healthy".into()),
            ..Heartbeat::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(cpu_times("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 2 3 4\n"), Some((20, 100)));
        assert_eq!(memory("MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  400 kB\n"), Some((1_024_000, 409_600)));
        assert_eq!(load_1m("0.52 0.58 0.59 2/345 12345\n"), Some(0.52));
        let dev = "Inter-|   Receive\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n\
                   lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n eth0: 2000 10 0 0 0 0 0 0 3000 20 0 0 0 0 0 0\n";
        assert_eq!(network(dev), Some((2000, 3000)));
        assert_eq!(network(""), None);
    }

    #[test]
    fn this_host_reports_memory_disk_and_cpu_after_two_samples() {
        let mut s = Sampler::default();
        let first = s.sample(1);
        assert!(first.memory_total_bytes.unwrap_or(0) > 0, "{first:?}");
        assert!(first.disk_total_bytes.unwrap_or(0) > 0, "{first:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let second = s.sample(2);
        assert!(second.cpu_percent.is_some_and(|c| (0.0..=100.0).contains(&c)), "{second:?}");
        assert_eq!(second.problem(), None);
    }
}
