//! Rate limiting with GCRA (the generic cell rate algorithm): a burst and a sustained rate per
//! key, tiers by role, bans for repeated violators, and an answer that carries `Retry-After`.
//!
//! Two stores share one algorithm: [`LocalLimiter`] for one replica (sharded in-process maps,
//! a monotonic clock) and [`RedisLimiter`] for several replicas sharing budgets (one Lua script,
//! one round trip per check, Redis's own clock so replicas' clocks do not matter, keys
//! hash-tagged for Redis Cluster). `governor` implements GCRA well for one process, but it
//! has no per-key quotas (tiers), no bans and no shared store; the local store here follows the
//! same algorithm so that both stores decide alike, and its cost is measured against
//! `governor` in `benches/rate_limit.rs`.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT). With emission interval
//! `T = period / rate` and tolerance `τ = T × (burst − 1)`, a request at `now` is admitted when
//! `TAT − now ≤ τ`, and then `TAT = max(TAT, now) + T`. Over any interval of length `L` it
//! admits at most `burst + L / T` requests.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nova_tenancy::{Role, TenantId};

/// A quota: up to `burst` requests at once, refilled at `rate` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Emission interval `T`, in nanoseconds.
    emission_ns: u64,
    /// Tolerance `τ = T × (burst − 1)`, in nanoseconds.
    tolerance_ns: u64,
    burst: u32,
}

/// Why a quota or limiter configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// The period divided by the rate is under a microsecond, or the period is over a day.
    #[error("a quota's interval between requests must be between 1 µs and 1 day")]
    BadQuota,
    /// The store could not be reached or answered oddly (category only, never a reply).
    #[error("rate limit store: {0}")]
    Store(String),
}

impl Quota {
    /// `burst` requests at once, `rate` more per `per` after that.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    /// use nova_auth::rate_limit::Quota;
    /// let q = Quota::new(NonZeroU32::new(20).unwrap(), NonZeroU32::new(10).unwrap(), Duration::from_secs(1))?;
    /// assert_eq!(q.burst(), 20);
    /// # Ok::<(), nova_auth::rate_limit::RateLimitError>(())
    /// ```
    ///
    /// # Errors
    /// [`RateLimitError::BadQuota`] for an interval under 1 µs or a period over a day.
    pub fn new(burst: NonZeroU32, rate: NonZeroU32, per: Duration) -> Result<Self, RateLimitError> {
        if per > Duration::from_secs(86_400) {
            return Err(RateLimitError::BadQuota);
        }
        let emission_ns = u64::try_from(per.as_nanos() / u128::from(rate.get()))
            .map_err(|_| RateLimitError::BadQuota)?;
        if emission_ns < 1_000 {
            return Err(RateLimitError::BadQuota);
        }
        Ok(Self {
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(u64::from(burst.get() - 1)),
            burst: burst.get(),
        })
    }

    /// `rate` per second with a burst of `burst`.
    ///
    /// # Errors
    /// [`RateLimitError::BadQuota`] above a million per second.
    pub fn per_second(rate: u32, burst: u32) -> Result<Self, RateLimitError> {
        let (Some(rate), Some(burst)) = (NonZeroU32::new(rate), NonZeroU32::new(burst)) else {
            return Err(RateLimitError::BadQuota);
        };
        Self::new(burst, rate, Duration::from_secs(1))
    }

    /// The burst size.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The interval between requests at the sustained rate.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.emission_ns)
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Over the quota: try again after this long (`Retry-After`).
    Limited {
        /// How long until one request would be admitted.
        retry_after: Duration,
    },
    /// Banned for repeated violations: nothing is admitted for this long.
    Banned {
        /// How long the ban still lasts.
        retry_after: Duration,
    },
}

impl Verdict {
    /// Whether the request may proceed.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed)
    }

    /// The `Retry-After` header value in whole seconds (rounded up, at least 1), if limited.
    #[must_use]
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Allowed => None,
            Self::Limited { retry_after } | Self::Banned { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .map(|s| s.max(1))
            }
        }
    }
}

/// Bans: a key that is limited `violations` times within `window` is refused everything for
/// `ban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// Limited answers that trigger a ban.
    pub violations: u32,
    /// The window they are counted in.
    pub window: Duration,
    /// How long the ban lasts.
    pub ban: Duration,
}

impl Default for BanPolicy {
    /// 50 limited answers within a minute ban the key for 15 minutes.
    fn default() -> Self {
        Self {
            violations: 50,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(900),
        }
    }
}

/// What a budget is keyed by. Keys from different kinds never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A whole tenant.
    Tenant(TenantId),
    /// A client address; IPv6 addresses are grouped by /64, the block one host usually holds.
    Ip(IpAddr),
    /// An API key, by its public id.
    ApiKey(Box<str>),
    /// Anything else, namespaced by the caller.
    Custom(Box<str>),
}

impl LimitKey {
    /// The key for a client address (IPv6 grouped by /64, IPv4-mapped IPv6 as IPv4).
    #[must_use]
    pub fn ip(addr: IpAddr) -> Self {
        Self::Ip(match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        })
    }

    /// The text form used in shared stores.
    #[must_use]
    pub fn to_text(&self) -> String {
        match self {
            Self::Tenant(t) => format!("t:{t}"),
            Self::Ip(ip) => format!("ip:{ip}"),
            Self::ApiKey(k) => format!("k:{k}"),
            Self::Custom(c) => format!("c:{c}"),
        }
    }
}

/// Quotas by role: end users < agents < services, from configuration. A principal gets the
/// highest tier any of its roles maps to, and the default tier when none does.
#[derive(Debug, Clone)]
pub struct Tiers {
    default: Quota,
    by_role: Vec<(Box<str>, u8, Quota)>,
}

/// The built-in tier names, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// End users.
    EndUser,
    /// Support agents and other staff.
    Agent,
    /// Service accounts.
    Service,
}

impl Tiers {
    /// Everyone gets `default` until roles are mapped.
    #[must_use]
    pub fn new(default: Quota) -> Self {
        Self {
            default,
            by_role: Vec::new(),
        }
    }

    /// Principals holding `role` get `quota` (at `tier`, which orders tiers when a principal
    /// holds several mapped roles).
    #[must_use]
    pub fn role(mut self, role: &str, tier: Tier, quota: Quota) -> Self {
        self.by_role.push((role.into(), tier as u8, quota));
        self
    }

    /// The quota for a principal with these roles.
    #[must_use]
    pub fn quota_for(&self, roles: &[Role]) -> Quota {
        self.tier_for(roles).1
    }

    /// The tier (0 for the default, else 1 + the [`Tier`]) and quota for these roles. Budgets
    /// are kept per tier: a service and an end user behind one address do not share one.
    #[must_use]
    pub fn tier_for(&self, roles: &[Role]) -> (u8, Quota) {
        self.by_role
            .iter()
            .filter(|(name, _, _)| roles.iter().any(|r| r.as_str() == &**name))
            .max_by_key(|(_, tier, _)| *tier)
            .map_or((0, self.default), |(_, tier, q)| (tier + 1, *q))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tat_ns: u64,
    violations: u32,
    window_end_ns: u64,
    banned_until_ns: u64,
}

const SHARDS: usize = 16;
/// A shard is swept of expired keys once it holds this many.
const SWEEP_AT: usize = 4096;

/// An in-process limiter for one replica.
///
/// ```
/// use nova_auth::rate_limit::{LimitKey, LocalLimiter, Quota};
/// let limiter = LocalLimiter::new(None);
/// let q = Quota::per_second(1, 2)?;
/// let key = LimitKey::ip("203.0.113.7".parse().unwrap());
/// assert!(limiter.check(&key, q).is_allowed());
/// assert!(limiter.check(&key, q).is_allowed());
/// assert!(!limiter.check(&key, q).is_allowed()); // burst of 2 used up
/// # Ok::<(), nova_auth::rate_limit::RateLimitError>(())
/// ```
#[derive(Debug)]
pub struct LocalLimiter<K = LimitKey> {
    shards: Box<[Mutex<Shard<K>>]>,
    hasher: foldhash::fast::RandomState,
    // The TSC through `quanta` (as `governor` uses): a monotonic read costs a few
    // nanoseconds, where `Instant::now()` costs about 10 here.
    clock: quanta::Clock,
    start: u64,
    bans: Option<BanPolicy>,
}

impl<K: Hash + Eq + Clone> LocalLimiter<K> {
    /// A limiter, with bans if `bans` is set.
    #[must_use]
    pub fn new(bans: Option<BanPolicy>) -> Self {
        let clock = quanta::Clock::new();
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: hashbrown::HashTable::new(),
                        sweep_at: SWEEP_AT,
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            start: clock.raw(),
            clock,
            bans,
        }
    }

    /// Checks (and on success spends) one request for `key` under `quota`, now.
    pub fn check(&self, key: &K, quota: Quota) -> Verdict {
        let now = self.clock.delta_as_nanos(self.start, self.clock.raw());
        self.check_at(key, quota, now)
    }

    /// As [`LocalLimiter::check`], at `now_ns` nanoseconds after the limiter was created
    /// (monotonic; for tests and simulations).
    pub fn check_at(&self, key: &K, quota: Quota, now_ns: u64) -> Verdict {
        use std::hash::BuildHasher as _;
        // One hash per check: it picks the shard and finds the slot.
        let hash = self.hasher.hash_one(key);
        let shard = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        // A panic while holding the lock cannot leave a slot half-updated: every update is
        // one assignment of a `Copy` value.
        let mut shard = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, slot)) = shard.table.find_mut(hash, |(k, _)| k == key) {
            let (verdict, next) = gcra(*slot, quota, self.bans, now_ns);
            *slot = next;
            return verdict;
        }
        if shard.table.len() >= shard.sweep_at {
            // Drop keys whose state has run out; sweep again only once the shard has doubled,
            // so many live keys (a spray of addresses) cost amortised O(1), not O(n) each.
            shard.table.retain(|(_, s)| {
                s.tat_ns > now_ns || s.banned_until_ns > now_ns || s.window_end_ns > now_ns
            });
            shard.sweep_at = (shard.table.len() * 2).max(SWEEP_AT);
        }
        let (verdict, next) = gcra(Slot::default(), quota, self.bans, now_ns);
        let hasher = &self.hasher;
        shard
            .table
            .insert_unique(hash, (key.clone(), next), |(k, _)| hasher.hash_one(k));
        verdict
    }
}

#[derive(Debug)]
struct Shard<K> {
    table: hashbrown::HashTable<(K, Slot)>,
    sweep_at: usize,
}

/// One GCRA step with bans, shared by the local store and (in Lua) the Redis store.
fn gcra(mut s: Slot, q: Quota, bans: Option<BanPolicy>, now: u64) -> (Verdict, Slot) {
    if s.banned_until_ns > now {
        let retry_after = Duration::from_nanos(s.banned_until_ns - now);
        return (Verdict::Banned { retry_after }, s);
    }
    let tat = s.tat_ns.max(now);
    if tat - now > q.tolerance_ns {
        let retry_after = Duration::from_nanos(tat - now - q.tolerance_ns);
        if let Some(b) = bans {
            if s.window_end_ns <= now {
                s.violations = 0;
                s.window_end_ns = now.saturating_add(nanos(b.window));
            }
            s.violations += 1;
            if s.violations >= b.violations {
                s.banned_until_ns = now.saturating_add(nanos(b.ban));
                s.violations = 0;
                return (Verdict::Banned { retry_after: b.ban }, s);
            }
        }
        return (Verdict::Limited { retry_after }, s);
    }
    s.tat_ns = tat.saturating_add(q.emission_ns);
    (Verdict::Allowed, s)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(feature = "redis")]
pub use self::redis_store::RedisLimiter;

#[cfg(feature = "redis")]
mod redis_store {
    use super::{BanPolicy, LimitKey, Quota, RateLimitError, Verdict};
    use std::time::Duration;

    /// GCRA with bans in one script: Redis's clock (`TIME`), three keys sharing one hash tag
    /// (so Redis Cluster keeps them on one node), answers `{0}` allowed, `{1, ms}` limited,
    /// `{2, ms}` banned. Times are in microseconds (exact in Lua's doubles until year 2255).
    const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local ban_after = tonumber(ARGV[3])
local window_ms = tonumber(ARGV[4])
local ban_ms = tonumber(ARGV[5])
local banned = redis.call('PTTL', KEYS[3])
if banned > 0 then return {2, banned} end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
if tat - now > tolerance then
  if ban_after > 0 then
    local v = redis.call('INCR', KEYS[2])
    if v == 1 then redis.call('PEXPIRE', KEYS[2], window_ms) end
    if v >= ban_after then
      redis.call('SET', KEYS[3], '1', 'PX', ban_ms)
      redis.call('DEL', KEYS[2])
      return {2, ban_ms}
    end
  end
  return {1, math.ceil((tat - now - tolerance) / 1000)}
end
local new = tat + emission
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return {0, 0}
";

    /// A limiter whose budgets live in Redis, shared by every replica that uses the same
    /// prefix. One script call (one round trip) per check.
    #[derive(Clone)]
    pub struct RedisLimiter {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        bans: Option<BanPolicy>,
        script: redis::Script,
    }

    impl std::fmt::Debug for RedisLimiter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisLimiter")
                .field("prefix", &self.prefix)
                .field("bans", &self.bans)
                .finish_non_exhaustive()
        }
    }

    fn store_err(e: &redis::RedisError) -> RateLimitError {
        RateLimitError::Store(crate::redis_conn::describe(e))
    }

    impl RedisLimiter {
        /// Connects to Redis at `url`, keeping budgets under `prefix`.
        ///
        /// # Errors
        /// [`RateLimitError::Store`] when Redis cannot be reached.
        pub async fn connect(
            url: &str,
            prefix: &str,
            bans: Option<BanPolicy>,
        ) -> Result<Self, RateLimitError> {
            let conn = crate::redis_conn::connect(url)
                .await
                .map_err(RateLimitError::Store)?;
            Ok(Self {
                conn,
                prefix: prefix.to_owned(),
                bans,
                script: redis::Script::new(SCRIPT),
            })
        }

        /// The three keys of a budget, sharing the hash tag `{key}`.
        fn keys(&self, key: &LimitKey) -> [String; 3] {
            // Braces inside the key would end the hash tag early; they cannot occur in ids or
            // addresses, and are replaced in custom keys.
            let k = key.to_text().replace(['{', '}'], "_");
            [
                format!("{}:rl:{{{k}}}:tat", self.prefix),
                format!("{}:rl:{{{k}}}:v", self.prefix),
                format!("{}:rl:{{{k}}}:ban", self.prefix),
            ]
        }

        /// Checks (and on success spends) one request for `key` under `quota`.
        ///
        /// # Errors
        /// [`RateLimitError::Store`] when Redis fails; callers should fail closed (refuse).
        pub async fn check(&self, key: &LimitKey, quota: Quota) -> Result<Verdict, RateLimitError> {
            let [tat, v, ban] = self.keys(key);
            let b = self.bans.unwrap_or(BanPolicy {
                violations: 0,
                window: Duration::ZERO,
                ban: Duration::ZERO,
            });
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut conn = self.conn.clone();
            let (code, wait): (i64, i64) = self
                .script
                .key(tat)
                .key(v)
                .key(ban)
                .arg(quota.emission_ns / 1_000)
                .arg(quota.tolerance_ns / 1_000)
                .arg(b.violations)
                .arg(ms(b.window))
                .arg(ms(b.ban))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| store_err(&e))?;
            let retry_after = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
            match code {
                0 => Ok(Verdict::Allowed),
                1 => Ok(Verdict::Limited { retry_after }),
                2 => Ok(Verdict::Banned { retry_after }),
                _ => Err(RateLimitError::Store("redis: unexpected reply".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Over any window, GCRA admits at most `burst + window / T` requests.
        #[test]
        fn never_admits_more_than_burst_plus_rate_times_elapsed(
            burst in 1u32..20,
            rate in 1u32..50,
            gaps in proptest::collection::vec(0u64..200_000_000, 1..400),
        ) {
            let q = Quota::per_second(rate, burst).unwrap();
            let limiter: LocalLimiter<u8> = LocalLimiter::new(None);
            let mut now = 0u64;
            let mut admitted = Vec::new();
            for g in gaps {
                now += g;
                if limiter.check_at(&0, q, now).is_allowed() {
                    admitted.push(now);
                }
            }
            for (i, &start) in admitted.iter().enumerate() {
                for (j, &end) in admitted.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as f64;
                    let allowed = f64::from(burst) + (end - start) as f64 / q.emission_ns as f64;
                    prop_assert!(count <= allowed + 1e-9, "{count} admitted in {} ns", end - start);
                }
            }
        }

        /// A limited answer's Retry-After is honest: waiting exactly that long admits.
        #[test]
        fn retry_after_is_exact(burst in 1u32..10, rate in 1u32..100, extra in 0u32..5) {
            let q = Quota::per_second(rate, burst).unwrap();
            let limiter: LocalLimiter<u8> = LocalLimiter::new(None);
            for _ in 0..burst + extra {
                let _ = limiter.check_at(&0, q, 1_000);
            }
            let v = limiter.check_at(&0, q, 1_000);
            let Verdict::Limited { retry_after } = v else { panic!("{v:?}") };
            let at = 1_000 + nanos(retry_after);
            prop_assert!(!limiter.check_at(&0, q, at - 1).is_allowed());
            prop_assert!(limiter.check_at(&0, q, at).is_allowed());
        }
    }

    #[test]
    fn repeated_violators_are_banned_then_released() {
        let bans = BanPolicy {
            violations: 3,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(60),
        };
        let limiter: LocalLimiter<u8> = LocalLimiter::new(Some(bans));
        let q = Quota::per_second(1, 1).unwrap();
        assert!(limiter.check_at(&1, q, 0).is_allowed());
        assert!(matches!(
            limiter.check_at(&1, q, 1),
            Verdict::Limited { .. }
        ));
        assert!(matches!(
            limiter.check_at(&1, q, 2),
            Verdict::Limited { .. }
        ));
        assert_eq!(
            limiter.check_at(&1, q, 3),
            Verdict::Banned {
                retry_after: Duration::from_secs(60)
            }
        );
        // Banned even once the quota would allow again.
        let later = 5_000_000_000;
        assert!(matches!(
            limiter.check_at(&1, q, later),
            Verdict::Banned { .. }
        ));
        assert!(limiter.check_at(&1, q, 3 + 60_000_000_000).is_allowed());
        // Other keys are unaffected.
        assert!(limiter.check_at(&2, q, 4).is_allowed());
    }

    #[test]
    fn tiers_pick_the_highest_mapped_role() {
        let slow = Quota::per_second(1, 1).unwrap();
        let mid = Quota::per_second(10, 10).unwrap();
        let fast = Quota::per_second(100, 100).unwrap();
        let tiers =
            Tiers::new(slow)
                .role("agent", Tier::Agent, mid)
                .role("svc", Tier::Service, fast);
        let r = |s: &str| Role::new(s).unwrap();
        assert_eq!(tiers.quota_for(&[]), slow);
        assert_eq!(tiers.quota_for(&[r("viewer")]), slow);
        assert_eq!(tiers.quota_for(&[r("agent")]), mid);
        assert_eq!(tiers.quota_for(&[r("svc"), r("agent")]), fast);
    }

    #[test]
    fn ipv6_clients_share_a_slash_64_and_mapped_ipv4_is_ipv4() {
        let a = LimitKey::ip("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = LimitKey::ip("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = LimitKey::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            LimitKey::ip("::ffff:198.51.100.9".parse().unwrap()),
            LimitKey::ip("198.51.100.9".parse().unwrap())
        );
    }

    #[test]
    fn quotas_outside_the_supported_range_are_refused() {
        assert_eq!(Quota::per_second(0, 1), Err(RateLimitError::BadQuota));
        assert_eq!(Quota::per_second(1, 0), Err(RateLimitError::BadQuota));
        assert_eq!(
            Quota::per_second(2_000_000, 1),
            Err(RateLimitError::BadQuota)
        );
        assert!(
            Quota::new(
                NonZeroU32::MIN,
                NonZeroU32::MIN,
                Duration::from_secs(86_401)
            )
            .is_err()
        );
    }
}
