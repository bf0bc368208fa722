//! A per-client-address token bucket for the anonymous endpoints that a
//! stranger can hammer (pairing exchange, device challenge/verify/refresh),
//! and the global budget of wrong pairing codes.
//!
//! IPv6 clients are counted per /64: one host usually holds a whole /64,
//! so per-address buckets would give it 2^64 of them.

use std::collections::HashMap;
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
}

/// Addresses tracked at most; beyond this, full buckets are forgotten first.
const MAX_TRACKED: usize = 100_000;

/// Token buckets keyed by client address.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` requests a minute per address, with bursts of as many.
    pub fn per_minute(per_minute: u32) -> Self {
        let n = f64::from(per_minute.max(1));
        RateLimiter { burst: n, per_sec: n / 60.0, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `ip`; `Err(wait)` says how long until the next.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = bucket_key(ip);
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst);
        }
        let (tokens, at) = map.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
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
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let rl = RateLimiter::per_minute(2);
        let t = Instant::now();
        rl.check_at("2001:db8:1:2::1".parse().unwrap(), t).unwrap();
        rl.check_at("2001:db8:1:2:ffff::9".parse().unwrap(), t).unwrap();
        rl.check_at("2001:db8:1:2:abcd::".parse().unwrap(), t).unwrap_err();
        rl.check_at("2001:db8:1:3::1".parse().unwrap(), t).unwrap();
        rl.check_at("192.0.2.1".parse().unwrap(), t).unwrap();
        rl.check_at("::ffff:192.0.2.1".parse().unwrap(), t).unwrap();
        rl.check_at("192.0.2.1".parse().unwrap(), t).unwrap_err();
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

    #[test]
    fn bursts_then_refills_per_address() {
        let rl = RateLimiter::per_minute(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t = Instant::now();
        for _ in 0..3 {
            rl.check_at(a, t).unwrap();
        }
        let wait = rl.check_at(a, t).unwrap_err();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
        rl.check_at(b, t).unwrap();
        rl.check_at(a, t + Duration::from_secs(20)).unwrap();
        rl.check_at(a, t + Duration::from_secs(20)).unwrap_err();
    }
}
