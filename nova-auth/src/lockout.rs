//! Brute-force lockout for accounts and API key ids: failed attempts counted in a window
//! (default 5 in 15 minutes, [`LockoutPolicy`]), a lock for a set time, and a reset on
//! success. [`LocalLockout`] serves one replica; [`RedisLockout`] shares counts between
//! replicas (one script call per failure, keys hash-tagged for Redis Cluster).
//!
//! A lock keyed only by account name lets anyone lock a victim out by failing on purpose.
//! Key accounts by tenant and account, keep the lock short, and pair it with rate limits per
//! client address ([`crate::rate_limit`]), which slow the attacker without locking the user.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use nova_tenancy::TenantId;

pub use crate::api_key::LockoutPolicy;

/// Whose failures are counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// A login name (or user id) within a tenant.
    Account {
        /// The tenant.
        tenant: TenantId,
        /// The login name or user id, as the caller identifies accounts.
        account: Box<str>,
    },
    /// An API key, by its public id.
    ApiKey(Box<str>),
}

impl LockKey {
    /// The text form used in shared stores.
    #[must_use]
    pub fn to_text(&self) -> String {
        match self {
            Self::Account { tenant, account } => format!("a:{tenant}:{account}"),
            Self::ApiKey(id) => format!("k:{id}"),
        }
    }
}

/// The state of a key after a check or a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum LockState {
    /// Attempts are allowed; `failures` have been counted in the current window.
    Open {
        /// Failures so far in the window.
        failures: u32,
    },
    /// Locked: refuse attempts, even with the right secret, for this long.
    Locked {
        /// How long the lock still lasts.
        retry_after: Duration,
    },
}

impl LockState {
    /// Whether attempts are refused.
    #[must_use]
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Locked { .. })
    }
}

/// Why the lockout store failed (category only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lockout store: {0}")]
pub struct LockoutError(String);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_end: Instant,
    locked_until: Option<Instant>,
}

/// Lockout state in this process.
///
/// ```
/// use nova_auth::lockout::{LocalLockout, LockKey, LockoutPolicy};
/// let lockout = LocalLockout::new(LockoutPolicy::default());
/// let key = LockKey::ApiKey("k_123".into());
/// for _ in 0..4 {
///     assert!(!lockout.record_failure(&key).is_locked());
/// }
/// assert!(lockout.record_failure(&key).is_locked()); // the fifth failure locks
/// assert!(lockout.check(&key).is_locked());
/// # lockout.reset(&key);
/// ```
#[derive(Debug)]
pub struct LocalLockout {
    policy: LockoutPolicy,
    entries: Mutex<HashMap<LockKey, Entry>>,
    sweep_at: std::sync::atomic::AtomicUsize,
}

const SWEEP_AT: usize = 4096;

/// `now + d`, or as far ahead as the clock allows.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(crate::api_key::FAR_FUTURE))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

impl LocalLockout {
    /// An empty store with `policy`.
    #[must_use]
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::default()),
            sweep_at: std::sync::atomic::AtomicUsize::new(SWEEP_AT),
        }
    }

    /// Whether `key` is locked now (check before verifying a secret).
    pub fn check(&self, key: &LockKey) -> LockState {
        self.check_at(key, Instant::now())
    }

    /// As [`LocalLockout::check`], at `now`.
    pub fn check_at(&self, key: &LockKey, now: Instant) -> LockState {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(Entry {
                locked_until: Some(until),
                ..
            }) if *until > now => LockState::Locked {
                retry_after: *until - now,
            },
            Some(e) if e.window_end > now => LockState::Open {
                failures: e.failures,
            },
            _ => LockState::Open { failures: 0 },
        }
    }

    /// Counts a failed attempt; returns the state after it.
    pub fn record_failure(&self, key: &LockKey) -> LockState {
        self.record_failure_at(key, Instant::now())
    }

    /// As [`LocalLockout::record_failure`], at `now`.
    pub fn record_failure_at(&self, key: &LockKey, now: Instant) -> LockState {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.sweep_at.load(std::sync::atomic::Ordering::Relaxed)
            && !map.contains_key(key)
        {
            // Sweep only once the map has doubled since the last sweep: a spray of made-up
            // names costs amortised O(1) per failure, not a full scan each.
            map.retain(|_, e| e.window_end > now || e.locked_until.is_some_and(|u| u > now));
            self.sweep_at.store(
                (map.len() * 2).max(SWEEP_AT),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let e = map.entry(key.clone()).or_insert(Entry {
            failures: 0,
            window_end: later(now, self.policy.window),
            locked_until: None,
        });
        if let Some(until) = e.locked_until {
            if until > now {
                return LockState::Locked {
                    retry_after: until - now,
                };
            }
            e.locked_until = None;
            e.failures = 0;
            e.window_end = later(now, self.policy.window);
        }
        if e.window_end <= now {
            e.failures = 0;
            e.window_end = later(now, self.policy.window);
        }
        e.failures += 1;
        if e.failures >= self.policy.max_failures {
            e.locked_until = Some(later(now, self.policy.lock_for));
            e.failures = 0;
            return LockState::Locked {
                retry_after: self.policy.lock_for,
            };
        }
        LockState::Open {
            failures: e.failures,
        }
    }

    /// Forgets the failures of `key` (after a successful attempt). A lock in force stays.
    pub fn reset(&self, key: &LockKey) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(key) {
            e.failures = 0;
            if e.locked_until.is_none() {
                map.remove(key);
            }
        }
    }
}

#[cfg(feature = "redis")]
pub use self::redis_store::RedisLockout;

#[cfg(feature = "redis")]
mod redis_store {
    use super::{LockKey, LockState, LockoutError, LockoutPolicy};
    use std::time::Duration;

    /// Counts a failure: `{0, failures}` open, `{1, ms}` locked (now or already).
    const FAILURE: &str = r"
local locked = redis.call('PTTL', KEYS[2])
if locked > 0 then return {1, locked} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return {1, tonumber(ARGV[3])}
end
return {0, n}
";

    /// Reads the state: `{0, failures}` or `{1, ms}`.
    const CHECK: &str = r"
local locked = redis.call('PTTL', KEYS[2])
if locked > 0 then return {1, locked} end
return {0, tonumber(redis.call('GET', KEYS[1]) or '0') or 0}
";

    /// Lockout counts in Redis, shared by every replica using the same prefix.
    #[derive(Clone)]
    pub struct RedisLockout {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        policy: LockoutPolicy,
        failure: redis::Script,
        check: redis::Script,
    }

    impl std::fmt::Debug for RedisLockout {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisLockout")
                .field("prefix", &self.prefix)
                .field("policy", &self.policy)
                .finish_non_exhaustive()
        }
    }

    fn err(e: &redis::RedisError) -> LockoutError {
        LockoutError(crate::redis_conn::describe(e))
    }

    fn state((code, n): (i64, i64)) -> LockState {
        let n = u64::try_from(n).unwrap_or(0);
        if code == 1 {
            LockState::Locked {
                retry_after: Duration::from_millis(n),
            }
        } else {
            LockState::Open {
                failures: u32::try_from(n).unwrap_or(u32::MAX),
            }
        }
    }

    impl RedisLockout {
        /// Connects to Redis at `url`, keeping counts under `prefix`.
        ///
        /// # Errors
        /// [`LockoutError`] when Redis cannot be reached.
        pub async fn connect(
            url: &str,
            prefix: &str,
            policy: LockoutPolicy,
        ) -> Result<Self, LockoutError> {
            let conn = crate::redis_conn::connect(url)
                .await
                .map_err(LockoutError)?;
            Ok(Self {
                conn,
                prefix: prefix.to_owned(),
                policy,
                failure: redis::Script::new(FAILURE),
                check: redis::Script::new(CHECK),
            })
        }

        fn keys(&self, key: &LockKey) -> [String; 2] {
            let k = key.to_text().replace(['{', '}'], "_");
            [
                format!("{}:lock:{{{k}}}:n", self.prefix),
                format!("{}:lock:{{{k}}}:locked", self.prefix),
            ]
        }

        /// Whether `key` is locked now.
        ///
        /// # Errors
        /// [`LockoutError`] when Redis fails; treat as locked (fail closed).
        pub async fn check(&self, key: &LockKey) -> Result<LockState, LockoutError> {
            let [n, locked] = self.keys(key);
            let mut conn = self.conn.clone();
            let reply: (i64, i64) = self
                .check
                .key(n)
                .key(locked)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| err(&e))?;
            Ok(state(reply))
        }

        /// Counts a failed attempt; returns the state after it.
        ///
        /// # Errors
        /// [`LockoutError`] when Redis fails.
        pub async fn record_failure(&self, key: &LockKey) -> Result<LockState, LockoutError> {
            let [n, locked] = self.keys(key);
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut conn = self.conn.clone();
            let reply: (i64, i64) = self
                .failure
                .key(n)
                .key(locked)
                .arg(self.policy.max_failures.max(1))
                .arg(ms(self.policy.window))
                .arg(ms(self.policy.lock_for))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| err(&e))?;
            Ok(state(reply))
        }

        /// Forgets the failures of `key` after a success (a lock in force stays).
        ///
        /// # Errors
        /// [`LockoutError`] when Redis fails.
        pub async fn reset(&self, key: &LockKey) -> Result<(), LockoutError> {
            let [n, _] = self.keys(key);
            let mut conn = self.conn.clone();
            redis::cmd("DEL")
                .arg(n)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| err(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_the_window_lock_and_success_resets() {
        let l = LocalLockout::new(LockoutPolicy::default());
        let key = LockKey::Account {
            tenant: TenantId::new_v4(),
            account: "alice".into(),
        };
        let t0 = Instant::now();
        for i in 1..5 {
            assert_eq!(
                l.record_failure_at(&key, t0),
                LockState::Open { failures: i }
            );
        }
        l.reset(&key);
        assert_eq!(l.check_at(&key, t0), LockState::Open { failures: 0 });
        for _ in 0..4 {
            let _ = l.record_failure_at(&key, t0);
        }
        assert!(l.record_failure_at(&key, t0).is_locked());
        // Locked for 15 minutes, whatever happens meanwhile.
        l.reset(&key);
        assert!(l.check_at(&key, t0 + Duration::from_secs(899)).is_locked());
        assert!(!l.check_at(&key, t0 + Duration::from_secs(900)).is_locked());
    }

    #[test]
    fn absurd_durations_do_not_overflow_the_clock() {
        let l = LocalLockout::new(LockoutPolicy {
            max_failures: 2,
            window: Duration::MAX,
            lock_for: Duration::MAX,
        });
        let key = LockKey::ApiKey("k".into());
        let _ = l.record_failure(&key);
        assert!(l.record_failure(&key).is_locked());
        assert!(l.check(&key).is_locked());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = LocalLockout::new(LockoutPolicy::default());
        let key = LockKey::ApiKey("k1".into());
        let t0 = Instant::now();
        for i in 0..4 {
            let _ = l.record_failure_at(&key, t0 + Duration::from_secs(i));
        }
        let later = t0 + Duration::from_secs(15 * 60 + 5);
        assert_eq!(
            l.record_failure_at(&key, later),
            LockState::Open { failures: 1 }
        );
        // Another key is independent.
        assert_eq!(
            l.check_at(&LockKey::ApiKey("k2".into()), t0),
            LockState::Open { failures: 0 }
        );
    }
}
