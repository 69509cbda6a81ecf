//! Sessions in Redis, with automatic expiry: each session is one key whose TTL is the
//! smaller of the idle timeout and the time left before the absolute expiry, renewed on
//! every use; a set per user lists that user's sessions for revoke-all. Made for a single
//! Redis (with replicas): session creation writes the session key and the user's index in
//! one `MULTI`, which Redis Cluster would refuse across slots.
//!
//! This module must never store a session token, only its SHA-256.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nova_tenancy::{AuthMethod, Role, TenantId, UserId};
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::session::{SessionRecord, SessionStore};

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisSessionStore {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    tenant: String,
    user: String,
    ip: String,
    ua: String,
    created_ms: u64,
    expires_ms: u64,
    last_seen_ms: u64,
    idle_ms: u64,
    /// Absent in sessions stored before step-ups existed.
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    mfa_ms: Option<u64>,
    /// Absent in sessions stored before roles were kept.
    #[serde(default)]
    roles: Vec<String>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn redis_err(e: redis::RedisError) -> AuthError {
    AuthError::Store(crate::redis_conn::describe(&e))
}

impl RedisSessionStore {
    /// Connects to Redis at `url` (e.g. `redis://127.0.0.1:6379`), storing keys under `prefix`.
    ///
    /// # Errors
    /// [`AuthError::Store`] when Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, AuthError> {
        let conn = crate::redis_conn::connect(url)
            .await
            .map_err(AuthError::Store)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    // The session key carries no tenant/user (the token hash is all a lookup has), so it is
    // tagged with the hash itself; the per-user index set is tagged by tenant and user.
    fn session_key(&self, hash: &[u8; 32]) -> String {
        format!("{}:sess:{{{}}}", self.prefix, hex(hash))
    }

    fn user_key(&self, tenant: TenantId, user: UserId) -> String {
        format!("{}:user:{{{tenant}:{user}}}", self.prefix)
    }

    fn ttl(s: &Stored, now_ms: u64) -> u64 {
        s.idle_ms.min(s.expires_ms.saturating_sub(now_ms)).max(1)
    }
}

impl SessionStore for RedisSessionStore {
    async fn create(&self, s: SessionRecord) -> Result<(), AuthError> {
        let stored = Stored {
            tenant: s.tenant.to_string(),
            user: s.user.to_string(),
            ip: s.ip.to_string(),
            ua: s.user_agent.clone(),
            created_ms: ms(s.created_at),
            expires_ms: ms(s.expires_at),
            last_seen_ms: ms(s.last_seen_at),
            idle_ms: u64::try_from(s.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            methods: s.methods.iter().map(|m| m.as_str().to_owned()).collect(),
            mfa_ms: s.mfa_at.map(ms),
            roles: s.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        };
        let json = serde_json::to_string(&stored)
            .map_err(|_| AuthError::Store("encode session".into()))?;
        let ttl = Self::ttl(&stored, ms(SystemTime::now()));
        let mut conn = self.conn.clone();
        let user_key = self.user_key(s.tenant, s.user);
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.session_key(&s.token_hash))
            .arg(json)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("SADD")
            .arg(&user_key)
            .arg(hex(&s.token_hash))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&user_key)
            .arg(
                stored
                    .expires_ms
                    .saturating_sub(ms(SystemTime::now()))
                    .max(1),
            )
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn get(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>, AuthError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn
            .get(self.session_key(token_hash))
            .await
            .map_err(redis_err)?;
        let Some(json) = json else { return Ok(None) };
        let s: Stored =
            serde_json::from_str(&json).map_err(|_| AuthError::Store("corrupt session".into()))?;
        let corrupt = |_| AuthError::Store("corrupt session".into());
        Ok(Some(SessionRecord {
            token_hash: *token_hash,
            tenant: s.tenant.parse().map_err(corrupt)?,
            user: s.user.parse().map_err(corrupt)?,
            roles: s
                .roles
                .iter()
                .map(|r| Role::new(r))
                .collect::<Result<_, _>>()
                .map_err(|_| AuthError::Store("corrupt session".into()))?,
            ip: s
                .ip
                .parse::<IpAddr>()
                .map_err(|_| AuthError::Store("corrupt session".into()))?,
            user_agent: s.ua,
            created_at: UNIX_EPOCH + Duration::from_millis(s.created_ms),
            expires_at: UNIX_EPOCH + Duration::from_millis(s.expires_ms),
            last_seen_at: UNIX_EPOCH + Duration::from_millis(s.last_seen_ms),
            idle_timeout: Duration::from_millis(s.idle_ms),
            methods: s
                .methods
                .iter()
                .map(|m| AuthMethod::new(m))
                .collect::<Result<_, _>>()
                .map_err(|_| AuthError::Store("corrupt session".into()))?,
            mfa_at: s
                .mfa_ms
                .map(|m| {
                    UNIX_EPOCH
                        .checked_add(Duration::from_millis(m))
                        .ok_or_else(|| AuthError::Store("corrupt session".into()))
                })
                .transpose()?,
        }))
    }

    async fn touch(&self, token_hash: &[u8; 32], at: SystemTime) -> Result<(), AuthError> {
        let key = self.session_key(token_hash);
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(&key).await.map_err(redis_err)?;
        let Some(json) = json else { return Ok(()) };
        let mut s: Stored =
            serde_json::from_str(&json).map_err(|_| AuthError::Store("corrupt session".into()))?;
        s.last_seen_ms = s.last_seen_ms.max(ms(at));
        let ttl = Self::ttl(&s, ms(at));
        let json =
            serde_json::to_string(&s).map_err(|_| AuthError::Store("encode session".into()))?;
        // XX: never resurrect a session revoked between the GET and this SET.
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("PX")
            .arg(ttl)
            .arg("XX")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn revoke(&self, token_hash: &[u8; 32]) -> Result<bool, AuthError> {
        let mut conn = self.conn.clone();
        let n: u64 = conn
            .del(self.session_key(token_hash))
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }

    async fn revoke_user(&self, tenant: TenantId, user: UserId) -> Result<u64, AuthError> {
        let mut conn = self.conn.clone();
        let user_key = self.user_key(tenant, user);
        let members: Vec<String> = conn.smembers(&user_key).await.map_err(redis_err)?;
        let mut n = 0;
        for m in members {
            let removed: u64 = conn
                .del(format!("{}:sess:{{{m}}}", self.prefix))
                .await
                .map_err(redis_err)?;
            // Remove exactly what was revoked: a session created meanwhile stays indexed,
            // so a later revoke-all still finds it.
            let _: u64 = conn.srem(&user_key, &m).await.map_err(redis_err)?;
            n += removed;
        }
        Ok(n)
    }

    async fn record_step_up(
        &self,
        token_hash: &[u8; 32],
        methods: &[AuthMethod],
        at: SystemTime,
    ) -> Result<bool, AuthError> {
        let key = self.session_key(token_hash);
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(&key).await.map_err(redis_err)?;
        let Some(json) = json else {
            return Ok(false);
        };
        let mut s: Stored =
            serde_json::from_str(&json).map_err(|_| AuthError::Store("corrupt session".into()))?;
        s.methods
            .extend(methods.iter().map(|m| m.as_str().to_owned()));
        s.methods.sort_unstable();
        s.methods.dedup();
        s.mfa_ms = Some(s.mfa_ms.unwrap_or(0).max(ms(at)));
        let json =
            serde_json::to_string(&s).map_err(|_| AuthError::Store("encode session".into()))?;
        // XX: never resurrect a revoked session; KEEPTTL: the time to live stays what the
        // last `touch` set. A `touch` racing with this can write the session back without
        // the step-up, which fails closed (the user steps up again).
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(set.is_some())
    }
}
