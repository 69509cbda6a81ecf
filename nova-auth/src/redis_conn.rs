//! One way for every Redis-backed store in this crate to connect and to describe a failure:
//! by its category only, because a Redis error's text can echo keys and replies.

/// `redis: <category>`, never the server's words.
pub(crate) fn describe(e: &redis::RedisError) -> String {
    format!("redis: {:?}", e.kind())
}

/// A multiplexed connection to `url`, or the failure described.
pub(crate) async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| describe(&e))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| describe(&e))
}
