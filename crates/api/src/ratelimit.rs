//! The anonymous endpoints' per-address limits (counted by
//! `edgelink_ratelimit` like every other limit), the address bucket they
//! count against, and the global budget of wrong pairing codes.
//!
//! IPv6 clients are counted per /64: one host usually holds a whole /64,
//! so per-address buckets would give it 2^64 of them.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The separately counted limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `POST /api/v1/pairings/exchange`: strict, codes are guessable in principle.
    PairingExchange,
    /// Device challenge/verify/refresh: generous, a site's devices may share
    /// one address behind NAT.
    DeviceAuth,
    /// Socket.IO handshakes of intermediaries (a new Engine.IO session;
    /// the polls and upgrades of an open one are not counted): at the
    /// device-auth rate.
    IntermediaryHandshake,
}

impl Limit {
    /// The key prefix and requests per minute of this limit.
    pub fn name(self) -> &'static str {
        match self {
            Limit::PairingExchange => "pairing",
            Limit::DeviceAuth => "device-auth",
            Limit::IntermediaryHandshake => "intermediary",
        }
    }

    /// Whether this request counts against the limit.
    pub fn counts(self, query: Option<&str>) -> bool {
        match self {
            // An Engine.IO request naming its session is not a handshake.
            Limit::IntermediaryHandshake => !query.unwrap_or("").split('&').any(|kv| kv.starts_with("sid=")),
            _ => true,
        }
    }
}

/// The bucket an address counts against: itself for IPv4 (also written as
/// IPv4-mapped IPv6), its /64 for IPv6.
pub fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// A global budget of failed attempts (wrong pairing codes from anyone):
/// `per_hour` failures, refilling evenly. While it is spent, attempts are
/// refused before the code is looked up, so a botnet spread over many
/// addresses gains nothing by guessing faster than that.
#[derive(Debug)]
pub struct FailureBudget {
    per_hour: u32,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
    exhausted: std::sync::atomic::AtomicBool,
    failures: std::sync::atomic::AtomicU64,
    trips: std::sync::atomic::AtomicU64,
}

impl FailureBudget {
    /// `per_hour` failures an hour, all of them available at once.
    pub fn per_hour(per_hour: u32) -> Self {
        let n = f64::from(per_hour.max(1));
        FailureBudget {
            per_hour: per_hour.max(1),
            per_sec: n / 3600.0,
            state: Mutex::new((n, Instant::now())),
            exhausted: Default::default(),
            failures: Default::default(),
            trips: Default::default(),
        }
    }

    fn refill(&self, now: Instant) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, at) = *s;
        *s = ((tokens + now.duration_since(at).as_secs_f64() * self.per_sec).min(f64::from(self.per_hour)), now);
        s
    }

    /// `Err(wait)` while the budget is spent.
    pub fn check(&self) -> Result<(), Duration> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), Duration> {
        let s = self.refill(now);
        if s.0 >= 1.0 {
            if self.exhausted.swap(false, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!("pairing guess budget available again");
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.per_sec))
        }
    }

    /// Counts one failure against the budget.
    pub fn fail(&self) {
        self.fail_at(Instant::now())
    }

    fn fail_at(&self, now: Instant) {
        use std::sync::atomic::Ordering;
        let mut s = self.refill(now);
        s.0 = (s.0 - 1.0).max(0.0);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if s.0 < 1.0 && !self.exhausted.swap(true, Ordering::Relaxed) {
            let trips = self.trips.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                per_hour = self.per_hour,
                failures_total = failures,
                trips_total = trips,
                "pairing guess budget spent: wrong pairing codes from all clients exceeded the hourly budget; \
                 exchanges are refused until it refills (someone may be guessing codes)"
            );
        }
    }

    /// Failures counted since start, and how often the budget ran out.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (self.failures.load(Ordering::Relaxed), self.trips.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engine_io_handshakes_count_against_the_intermediary_limit() {
        let l = Limit::IntermediaryHandshake;
        assert!(l.counts(Some("EIO=4&transport=polling")));
        assert!(l.counts(Some("EIO=4&transport=websocket&proxyId=p")));
        assert!(l.counts(None));
        assert!(!l.counts(Some("EIO=4&transport=polling&sid=abc")));
        assert!(!l.counts(Some("sid=abc&EIO=4&transport=websocket")));
        assert!(Limit::DeviceAuth.counts(Some("sid=x")));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| bucket_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn the_failure_budget_is_global_and_refills() {
        let b = FailureBudget::per_hour(3);
        let t = Instant::now();
        for _ in 0..3 {
            b.check_at(t).unwrap();
            b.fail_at(t);
        }
        let wait = b.check_at(t).unwrap_err();
        assert!(wait > Duration::from_secs(1000) && wait <= Duration::from_secs(1201), "{wait:?}");
        assert_eq!(b.counts(), (3, 1));
        b.check_at(t + Duration::from_secs(1200)).unwrap();
    }
}
