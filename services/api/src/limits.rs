//! Limits of the API's callers: requests per agent (once authenticated), and requests refused
//! for want of a valid token per address, so that neither a busy information system nor a
//! flood of anonymous calls starves the others or the journal. `governor` keeps the buckets
//! (GCRA); over a limit, the answer is 429 with `Retry-After` (gRPC: RESOURCE_EXHAUSTED), and
//! nothing is read nor journaled: the refusal is counted in
//! `passerelle_api_rate_limited_total{limit}`.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use serde::{Deserialize, Serialize};

/// `api.limits` in the configuration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LimitsConfig {
    /// Requests per second an agent may sustain, and the burst above it.
    pub per_agent_per_second: u32,
    pub per_agent_burst: u32,
    /// Requests without a valid token one address may make per second, and the burst. Each is
    /// journaled while under this limit; above it, only counted.
    pub unauthenticated_per_second: u32,
    pub unauthenticated_burst: u32,
    /// Largest request body accepted (bytes).
    pub body_bytes: usize,
    /// A request not answered in this time gets 408.
    pub request_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_agent_per_second: 50,
            per_agent_burst: 200,
            unauthenticated_per_second: 2,
            unauthenticated_burst: 20,
            body_bytes: 64 * 1024,
            request_seconds: 30,
        }
    }
}

/// Which limit a request went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    PerAgent,
    Unauthenticated,
}

impl Limit {
    pub fn code(self) -> &'static str {
        match self {
            Limit::PerAgent => "per_agent",
            Limit::Unauthenticated => "unauthenticated_per_address",
        }
    }
}

/// A request over a limit: which, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    pub retry_after: Duration,
}

impl Exceeded {
    /// Whole seconds to wait, at least one (the `Retry-After` header).
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

#[derive(Clone)]
pub struct Limiters {
    per_agent: Arc<DefaultKeyedRateLimiter<(Option<String>, String)>>,
    unauthenticated: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

impl Limiters {
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            per_agent: Arc::new(RateLimiter::keyed(quota(config.per_agent_per_second, config.per_agent_burst))),
            unauthenticated: Arc::new(RateLimiter::keyed(quota(
                config.unauthenticated_per_second,
                config.unauthenticated_burst,
            ))),
        }
    }

    /// One request of the agent (identity provider, uid).
    pub fn agent(&self, idp_id: Option<&str>, uid: &str) -> Result<(), Exceeded> {
        let key = (idp_id.map(str::to_owned), uid.to_owned());
        self.per_agent.check_key(&key).map_err(|not_until| Exceeded {
            limit: Limit::PerAgent,
            retry_after: not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
        })
    }

    /// One request refused for want of a valid token, from `address` (None: unknown, one bucket).
    pub fn unauthenticated(&self, address: Option<IpAddr>) -> Result<(), Exceeded> {
        // An IPv6 client holds a whole /64: one bucket for it, not one per address.
        let key = match address {
            Some(IpAddr::V6(v6)) => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::from(segments)
            }
            Some(v4) => v4,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        self.unauthenticated.check_key(&key).map_err(|not_until| Exceeded {
            limit: Limit::Unauthenticated,
            retry_after: not_until.wait_time_from(governor::clock::DefaultClock::default().now()),
        })
    }

    /// Forgets the buckets that are full again (called periodically: the key sets stay small).
    pub fn forget_idle(&self) {
        self.per_agent.retain_recent();
        self.unauthenticated.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_over_the_burst_waits_and_another_agent_does_not() {
        let limiters =
            Limiters::new(&LimitsConfig { per_agent_per_second: 1, per_agent_burst: 3, ..LimitsConfig::default() });
        for _ in 0..3 {
            assert!(limiters.agent(None, "a").is_ok());
        }
        let exceeded = limiters.agent(None, "a").expect_err("over the burst");
        assert_eq!(exceeded.limit, Limit::PerAgent);
        assert!(exceeded.retry_after_seconds() >= 1);
        assert!(limiters.agent(None, "b").is_ok(), "another agent has its own bucket");
        assert!(limiters.agent(Some("idp"), "a").is_ok(), "the same uid at another identity provider too");
    }

    #[test]
    fn anonymous_calls_are_limited_per_address() {
        let limiters = Limiters::new(&LimitsConfig {
            unauthenticated_per_second: 1,
            unauthenticated_burst: 2,
            ..LimitsConfig::default()
        });
        let here = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(limiters.unauthenticated(here).is_ok());
        assert!(limiters.unauthenticated(here).is_ok());
        assert!(limiters.unauthenticated(here).is_err());
        assert!(limiters.unauthenticated(Some(IpAddr::from([10, 0, 0, 2]))).is_ok());
        // Addresses of one IPv6 /64 share a bucket.
        let a: IpAddr = "2001:db8::1".parse().expect("v6");
        let b: IpAddr = "2001:db8::ffff:2".parse().expect("v6");
        assert!(limiters.unauthenticated(Some(a)).is_ok());
        assert!(limiters.unauthenticated(Some(b)).is_ok());
        assert!(limiters.unauthenticated(Some(a)).is_err());
    }
}
