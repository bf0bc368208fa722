//! A per-client-address token bucket for the anonymous endpoints that a
//! stranger can hammer (pairing exchange, device challenge/verify/refresh).

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

#[cfg(test)]
mod tests {
    use super::*;

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
