//! Rate limiting: the in-process GCRA limiter against `governor`'s keyed limiter, and the
//! Redis limiter's checks per second over one connection.
//!
//! ```sh
//! cargo bench -p nova-auth --features peers --bench rate_limit   # Redis on 127.0.0.1:6379
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use nova_auth::rate_limit::{LimitKey, LocalLimiter, Quota, RedisLimiter};
use nova_tenancy::testing::paired_medians;

const KEYS: usize = 10_000;

fn main() {
    // A generous quota, so both limiters take the admitting path on every call.
    let burst = NonZeroU32::new(1_000_000).unwrap();
    let rate = NonZeroU32::new(1_000_000).unwrap();
    let nova_q = Quota::new(burst, rate, Duration::from_secs(1)).unwrap();
    let gov_q = governor::Quota::per_second(rate).allow_burst(burst);
    let keys: Vec<LimitKey> = (0..KEYS)
        .map(|i| {
            let [a, b] = u16::try_from(i).unwrap().to_be_bytes();
            LimitKey::ip(IpAddr::V4(Ipv4Addr::new(10, 0, a, b)))
        })
        .collect();

    let nova: LocalLimiter = LocalLimiter::new(None);
    let gov = governor::RateLimiter::keyed(gov_q);
    let (mut i, mut j) = (0usize, 0usize);
    // Warm both: every key present.
    for k in &keys {
        assert!(nova.check(k, nova_q).is_allowed());
        assert!(gov.check_key(k).is_ok());
    }
    println!("in-process keyed limiter, {KEYS} keys round robin (paired medians, 9 runs):");
    let mut ratios = Vec::new();
    for run in 0..9 {
        let (n, g) = paired_medians(
            30,
            20_000,
            || {
                i = (i + 1) % KEYS;
                black_box(nova.check(&keys[i], nova_q).is_allowed());
            },
            || {
                j = (j + 1) % KEYS;
                black_box(gov.check_key(&keys[j]).is_ok());
            },
        );
        ratios.push(n / g);
        println!(
            "  run {run}: nova {n:6.1} ns  governor {g:6.1} ns  ratio {:.2}",
            n / g
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  ratio nova ÷ governor: median {:.2}, range {:.2}–{:.2} (goal ≤ 1.5)",
        ratios[4], ratios[0], ratios[8]
    );

    let url =
        std::env::var("NOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prefix = format!("nova-bench-{}", std::process::id());
        let Ok(redis) = RedisLimiter::connect(&url, &prefix, None).await else {
            println!("\nRedis not reachable at {url}: Redis figures skipped");
            return;
        };
        let n = 20_000;
        let start = Instant::now();
        for i in 0..n {
            black_box(redis.check(&keys[i % KEYS], nova_q).await.unwrap().is_allowed());
        }
        let seq = n as f64 / start.elapsed().as_secs_f64();
        // Many requests in flight on the same multiplexed connection, as a busy server has.
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..32 {
            let (redis, keys) = (redis.clone(), keys.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..n / 32 {
                    black_box(redis.check(&keys[(t * 997 + i) % KEYS], nova_q).await.unwrap().is_allowed());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let conc = n as f64 / start.elapsed().as_secs_f64();
        println!("\nRedis limiter over one connection: {seq:.0} checks/s one at a time, {conc:.0} checks/s with 32 in flight");
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap();
        for chunk in keys.chunks(1000) {
            redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn).await.unwrap();
        }
    });
}
