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

/// The client's address when the hub sits behind reverse proxies it trusts: a request from one
/// of `trusted` names, in `X-Forwarded-For`, the addresses it went through, each proxy appending
/// the one it received it from; the client is the rightmost that is not itself a trusted proxy.
/// From any other peer the header is ignored (anyone can write it), as it is when nothing is
/// trusted.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(address) => {
                client = address;
                if !trusted.contains(&address) {
                    break;
                }
            }
            // A hop that is not an address: the chain cannot be followed further.
            Err(_) => break,
        }
    }
    client
}

/// Replaces the connection's address (`ConnectInfo`) with the client's behind trusted proxies
/// ([`client_address`]), for every handler after it.
pub async fn behind_proxies(
    axum::extract::State(trusted): axum::extract::State<Arc<[IpAddr]>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(axum::extract::ConnectInfo(peer)) =
        request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().copied()
    {
        let forwarded = request.headers().get("x-forwarded-for").and_then(|value| value.to_str().ok());
        let client = client_address(peer.ip(), forwarded, &trusted);
        if client != peer.ip() {
            request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(client, 0)));
        }
    }
    next.run(request).await
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

    #[test]
    fn the_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() {
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let inner: IpAddr = "10.0.0.2".parse().expect("ip");
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        let trusted = [proxy, inner];
        assert_eq!(client_address(proxy, Some("198.51.100.9, 203.0.113.7, 10.0.0.2"), &trusted), client);
        assert_eq!(client_address(proxy, Some("203.0.113.7"), &trusted), client);
        assert_eq!(client_address(proxy, None, &trusted), proxy, "no header: the proxy is the client");
        assert_eq!(client_address(proxy, Some("garbage"), &trusted), proxy);
        // From anyone else the header is the caller's own words: ignored.
        assert_eq!(client_address(client, Some("198.51.100.9"), &trusted), client);
        assert_eq!(client_address(proxy, Some("198.51.100.9"), &[]), proxy, "nothing trusted: ignored");
    }
}
