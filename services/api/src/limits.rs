//! Who is calling, and how much they may: the caller's network address (the TCP peer,
//! or the client a trusted proxy names in `X-Forwarded-For`), and two rate limits on
//! both transports.
//!
//! - **Failed authentications per source address** (a missing, unknown or refused
//!   token; default 10 a minute, 5 at once): once an address has used them up, its
//!   requests are refused (429 / `RESOURCE_EXHAUSTED`) before any token is looked up,
//!   whatever token they carry, until a failure's worth has replenished. Guessing tokens
//!   is pointless anyway (256 random bits); the limit keeps a guesser from loading the
//!   database and flooding the audit log, which records each block once, not each
//!   refused request. IPv6 addresses count by their /64: one machine has a whole /64.
//! - **Requests per authenticated user** (default 20 a second, 40 at once), so one
//!   runaway dashboard or script cannot starve the others.
//!
//! Both are `governor` keyed GCRA limiters; their keys are forgotten once idle
//! ([`Limits::sweep`], every [`SWEEP_EVERY`]), so memory holds only recent callers.
//! Refusals are counted in `fleet_api_rate_limited_total{transport,limit}` and logged
//! as one warning per address or user per sweep, never per request, never with a token.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

/// How often idle limiter keys are dropped and refusals are logged.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// At most this many addresses or users are named in one sweep's log lines; the rest
/// are summed in one line.
const MAX_NAMED_PER_SWEEP: usize = 100;

/// The limits and the proxies trusted to name the caller.
#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// A proxy (address or CIDR, repeatable or comma-separated) whose
    /// `X-Forwarded-For` names the real caller. Default none: the header is ignored,
    /// because any client can send it.
    #[arg(
        long = "trusted-proxy",
        env = "FLEET_API_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Failed authentications (missing, unknown or refused token) allowed per source
    /// address and minute, sustained.
    #[arg(long, env = "FLEET_API_AUTH_FAILURES_PER_MINUTE", default_value = "10")]
    pub auth_failures_per_minute: NonZeroU32,
    /// Failed authentications one source address may make at once before the
    /// per-minute rate applies.
    #[arg(long, env = "FLEET_API_AUTH_FAILURE_BURST", default_value = "5")]
    pub auth_failure_burst: NonZeroU32,
    /// Requests allowed per authenticated user and second, sustained.
    #[arg(long, env = "FLEET_API_USER_REQUESTS_PER_SECOND", default_value = "20")]
    pub user_requests_per_second: NonZeroU32,
    /// Requests one user may make at once before the per-second rate applies.
    #[arg(long, env = "FLEET_API_USER_REQUEST_BURST", default_value = "40")]
    pub user_request_burst: NonZeroU32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let n = |v: u32| NonZeroU32::new(v).expect("not zero");
        Self {
            trusted_proxies: Vec::new(),
            auth_failures_per_minute: n(10),
            auth_failure_burst: n(5),
            user_requests_per_second: n(20),
            user_request_burst: n(40),
        }
    }
}

/// An address (`10.0.0.5`) or a network (`10.0.0.0/8`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{s}' is neither an IP address nor a CIDR network"))
}

/// Which limit refused a request (the `limit` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    AuthFailures,
    UserRequests,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::AuthFailures => "auth_failures",
            Limit::UserRequests => "user_requests",
        }
    }
}

/// Where a call came from: the address to audit and limit (`addr`), and the proxy it
/// came through when a trusted one named it (`via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub transport: &'static str,
    pub addr: Option<IpAddr>,
    pub via: Option<IpAddr>,
}

type FailureLimiter = RateLimiter<
    IpAddr,
    governor::state::keyed::DefaultKeyedStateStore<IpAddr>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

/// What happened to a failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the address may still try.
    Counted,
    /// Counted, and it was the address's last: it is refused until `retry_after` has
    /// passed. The block is new (audit it once).
    NowBlocked { retry_after: Duration },
}

#[derive(Debug)]
pub struct Limits {
    trusted_proxies: Vec<IpNet>,
    failures: FailureLimiter,
    failure_interval: Duration,
    /// Addresses out of failures, until when. Only blocked addresses are here.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    users: DefaultKeyedRateLimiter<String>,
    /// Refusals since the last sweep, per limit and address or user (for the log).
    refused: Mutex<HashMap<(Limit, String), u64>>,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Self {
        let failures = Quota::per_minute(config.auth_failures_per_minute)
            .allow_burst(config.auth_failure_burst);
        let users = Quota::per_second(config.user_requests_per_second)
            .allow_burst(config.user_request_burst);
        Self {
            trusted_proxies: config.trusted_proxies.clone(),
            failure_interval: failures.replenish_interval(),
            failures: RateLimiter::keyed(failures).with_middleware(),
            blocked: Mutex::default(),
            users: RateLimiter::keyed(users),
            refused: Mutex::default(),
        }
    }

    /// The caller of a connection from `peer` that sent these `X-Forwarded-For` values
    /// (in the order received). The header is believed only when the peer is a trusted
    /// proxy, and then read from the right: each hop appends the address it was called
    /// from, so the caller is the rightmost address that is not itself a trusted proxy.
    /// Anything left of it was written by the client and may be forged. An entry that
    /// is not an address stops the walk at the hop that wrote it.
    pub fn origin<'a>(
        &self,
        transport: &'static str,
        peer: Option<SocketAddr>,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> Origin {
        let peer = peer.map(|p| canonical(p.ip()));
        let direct = Origin {
            transport,
            addr: peer,
            via: None,
        };
        let Some(peer_ip) = peer else {
            return direct;
        };
        if !self.is_trusted(peer_ip) {
            return direct;
        }
        let hops: Vec<&str> = forwarded_for
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let mut caller = peer_ip;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            caller = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Origin {
            transport,
            addr: Some(caller),
            via: (caller != peer_ip).then_some(peer_ip),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// How long `addr` must still wait, if it has used up its failed authentications.
    pub fn blocked(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let key = limiter_key(addr);
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked
            .get(&key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Counts a failed authentication from `addr`.
    pub fn failed(&self, addr: Option<IpAddr>) -> Failure {
        let key = limiter_key(addr);
        let retry_after = match self.failures.check_key(&key) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return Failure::Counted,
            // That was the last one the address had: it waits for one to replenish.
            Ok(_) => self.failure_interval,
            // Failures raced past the block (concurrent requests): block from now on.
            Err(not_until) => not_until
                .wait_time_from(self.failures.clock().now())
                .max(Duration::from_millis(1)),
        };
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let was_blocked = blocked.get(&key).is_some_and(|until| *until > now);
        blocked.insert(key, now + retry_after);
        if was_blocked {
            Failure::Counted
        } else {
            Failure::NowBlocked { retry_after }
        }
    }

    /// Takes one request from `user`'s allowance; Err(how long to wait) if it has none.
    pub fn user_request(&self, user: &str) -> Result<(), Duration> {
        self.users
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.users.clock().now()))
    }

    /// Notes a refusal for the next sweep's log line.
    pub fn note_refused(&self, limit: Limit, who: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let key = if refused.len() < MAX_NAMED_PER_SWEEP
            || refused.contains_key(&(limit, who.to_owned()))
        {
            (limit, who.to_owned())
        } else {
            (limit, "(others)".to_owned())
        };
        *refused.entry(key).or_default() += 1;
    }

    /// Forgets idle keys and expired blocks (memory holds only recent callers), and
    /// logs the refusals since the last sweep: one line per address or user.
    pub fn sweep(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        self.users.retain_recent();
        self.users.shrink_to_fit();
        let now = Instant::now();
        {
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
        }
        let refused = std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()));
        for ((limit, who), count) in refused {
            match limit {
                Limit::AuthFailures => tracing::warn!(
                    address = %who,
                    refused = count,
                    "too many failed authentications from this address: its requests were refused without checking tokens"
                ),
                Limit::UserRequests => tracing::warn!(
                    user = %who,
                    refused = count,
                    "this user was over its request rate: requests refused"
                ),
            }
        }
    }

    /// How many addresses and users the limiters remember (for tests of the sweep).
    #[cfg(test)]
    fn remembered(&self) -> (usize, usize) {
        (self.failures.len(), self.users.len())
    }
}

/// A wait in whole seconds, rounded up and at least 1 (`Retry-After`, messages): a
/// client that waits this long gets through.
pub fn retry_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, from dual-stack sockets) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The limiter's key for an address: IPv6 by its /64 (a single host or home network
/// is given a whole /64, so counting per address would give it 2^64 allowances); an
/// unknown address shares one key.
fn limiter_key(addr: Option<IpAddr>) -> IpAddr {
    match addr.map(canonical) {
        Some(IpAddr::V6(v6)) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(proxies: &[&str]) -> Limits {
        Limits::new(&LimitsConfig {
            trusted_proxies: proxies.iter().map(|p| parse_net(p).expect("net")).collect(),
            ..LimitsConfig::default()
        })
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().expect("ip"), 40000))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let none = limits(&[]);
        let o = none.origin("http", peer("198.51.100.9"), ["203.0.113.7"]);
        assert_eq!((o.addr, o.via), (ip("198.51.100.9"), None));
        let other = limits(&["10.0.0.0/8"]);
        let o = other.origin("http", peer("198.51.100.9"), ["203.0.113.7"]);
        assert_eq!((o.addr, o.via), (ip("198.51.100.9"), None));
    }

    #[test]
    fn a_trusted_proxy_names_the_rightmost_untrusted_hop() {
        let l = limits(&["10.0.0.0/8", "192.0.2.1"]);
        // The client forged the first entry; the proxies appended the rest.
        let o = l.origin(
            "grpc",
            peer("10.1.1.1"),
            ["1.1.1.1, 203.0.113.7", "192.0.2.1"],
        );
        assert_eq!((o.addr, o.via), (ip("203.0.113.7"), ip("10.1.1.1")));
        // No header: the proxy itself.
        let o = l.origin("grpc", peer("10.1.1.1"), []);
        assert_eq!((o.addr, o.via), (ip("10.1.1.1"), None));
        // Garbage stops the walk at the hop that wrote it.
        let o = l.origin("grpc", peer("10.1.1.1"), ["203.0.113.7, not-an-ip"]);
        assert_eq!(o.addr, ip("10.1.1.1"));
        // Ports and brackets are allowed.
        let o = l.origin("grpc", peer("10.1.1.1"), ["[2001:db8::5]:443"]);
        assert_eq!(o.addr, ip("2001:db8::5"));
        let o = l.origin("grpc", peer("::ffff:10.1.1.1"), ["203.0.113.8:1234"]);
        assert_eq!(o.addr, ip("203.0.113.8"));
    }

    #[test]
    fn an_address_out_of_failures_is_blocked_and_another_is_not() {
        let l = limits(&[]);
        let a = ip("203.0.113.7");
        for _ in 0..4 {
            assert_eq!(l.failed(a), Failure::Counted);
            assert_eq!(l.blocked(a), None);
        }
        assert!(matches!(l.failed(a), Failure::NowBlocked { .. }));
        let left = l.blocked(a).expect("blocked");
        assert!(left <= Duration::from_secs(6), "{left:?}");
        assert_eq!(l.failed(a), Failure::Counted, "the block is new only once");
        assert_eq!(l.blocked(ip("203.0.113.8")), None);
        // One IPv6 /64 is one caller.
        let v6 = ip("2001:db8:1:2::1");
        for _ in 0..5 {
            l.failed(v6);
        }
        assert!(l.blocked(ip("2001:db8:1:2:ffff::9")).is_some());
        assert!(l.blocked(ip("2001:db8:1:3::1")).is_none());
    }

    #[test]
    fn the_sweep_forgets_callers_whose_allowance_is_whole_again() {
        // Allowances that refill within a millisecond.
        let l = Limits::new(&LimitsConfig {
            auth_failures_per_minute: NonZeroU32::new(60_000).expect("n"),
            auth_failure_burst: NonZeroU32::new(1).expect("n"),
            user_requests_per_second: NonZeroU32::new(1_000).expect("n"),
            user_request_burst: NonZeroU32::new(1).expect("n"),
            ..LimitsConfig::default()
        });
        let a = ip("203.0.113.7");
        assert!(matches!(l.failed(a), Failure::NowBlocked { .. }));
        l.user_request("clinic-a").expect("allowed");
        l.note_refused(Limit::UserRequests, "clinic-a");
        assert_eq!(l.remembered(), (1, 1));
        std::thread::sleep(Duration::from_millis(50));
        l.sweep();
        assert_eq!(l.remembered(), (0, 0), "idle callers forgotten");
        assert!(
            l.blocked.lock().expect("lock").is_empty(),
            "expired blocks forgotten"
        );
        assert!(
            l.refused.lock().expect("lock").is_empty(),
            "refusals logged"
        );
    }

    #[test]
    fn a_user_over_its_rate_waits_and_another_does_not() {
        let l = Limits::new(&LimitsConfig {
            user_requests_per_second: NonZeroU32::new(1).expect("n"),
            user_request_burst: NonZeroU32::new(3).expect("n"),
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            assert!(l.user_request("a").is_ok());
        }
        assert!(l.user_request("a").is_err());
        assert!(l.user_request("b").is_ok());
        assert_eq!(l.remembered().1, 2);
    }

    #[test]
    fn refusals_are_named_up_to_a_bound_per_sweep() {
        let l = limits(&[]);
        for i in 0..(MAX_NAMED_PER_SWEEP + 50) {
            l.note_refused(
                Limit::AuthFailures,
                &format!("10.0.{}.{}", i / 256, i % 256),
            );
        }
        assert_eq!(
            l.refused.lock().expect("lock").len(),
            MAX_NAMED_PER_SWEEP + 1
        );
        l.sweep();
        assert!(l.refused.lock().expect("lock").is_empty());
    }
}
