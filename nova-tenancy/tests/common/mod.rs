//! What the PostgreSQL test suites of nova-tenancy share.

/// Runs each named `async fn(Via)` twice, as `<name>::direct` and
/// `<name>::through_pgbouncer`. Multi-threaded runtimes for all: the concurrency tests
/// need one, and it costs the others nothing.
macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn direct() {
                    super::$name(Via::Direct).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn through_pgbouncer() {
                    super::$name(Via::PgBouncer).await;
                }
            }
        )+
    };
}
