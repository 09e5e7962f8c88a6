//! A media node's entry in a cluster's Redis (`hush-sfu --redis`): the
//! signaling nodes place each room's media on the live node with the
//! fewest rooms and drive it through its control API (`hush_signaling`'s
//! cluster module reads what this writes).
//!
//! Keys: the set [`MEDIA_NODES`] of node ids, and per node the hash
//! [`media_node_key`] with `url` (the control API, `http://HOST:PORT`; an
//! embedded SFU writes `embedded`), `capacity` (most rooms) and `rooms`,
//! refreshed every second and expiring after five. A node gone silent
//! drops out of placement when its hash expires.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;

/// The set of media node ids.
pub const MEDIA_NODES: &str = "hush:sfus";

/// How often a node refreshes its entry.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long an entry lives without a refresh.
pub const TTL: Duration = Duration::from_secs(5);

/// The hash of media node `id`.
pub fn media_node_key(id: &str) -> String {
    format!("hush:sfu:{id}")
}

/// What a media node says about itself.
#[derive(Debug, Clone)]
pub struct MediaNodeEntry {
    /// Its id, unique in the cluster.
    pub id: String,
    /// `http://HOST:PORT` of its control API, or `embedded`.
    pub url: String,
    /// The most rooms it takes.
    pub capacity: usize,
}

/// Redis refused or did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster state (Redis) unavailable: {0}")]
pub struct RegisterError(pub String);

impl From<redis::RedisError> for RegisterError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// A connection to the cluster's Redis, bounded as the signaling nodes' are.
pub async fn connect(url: &str) -> Result<ConnectionManager, RegisterError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    Ok(client.get_connection_manager_with_config(config).await?)
}

/// Writes `entry` with `rooms` rooms now held, for [`TTL`].
pub async fn beat(
    redis: &mut ConnectionManager,
    entry: &MediaNodeEntry,
    rooms: usize,
) -> Result<(), RegisterError> {
    let key = media_node_key(&entry.id);
    let ttl = i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX);
    redis::pipe()
        .atomic()
        .hset_multiple(
            &key,
            &[
                ("url", entry.url.clone()),
                ("capacity", entry.capacity.to_string()),
                ("rooms", rooms.to_string()),
            ],
        )
        .ignore()
        .pexpire(&key, ttl)
        .ignore()
        .sadd(MEDIA_NODES, &entry.id)
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Takes `entry` out of the cluster now (a node shutting down).
pub async fn leave(redis: &mut ConnectionManager, id: &str) -> Result<(), RegisterError> {
    redis::pipe()
        .del(media_node_key(id))
        .srem(MEDIA_NODES, id)
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Keeps a standalone node's entry fresh every [`HEARTBEAT`] with the
/// rooms its SFU holds, until the task is aborted. A failed beat is
/// logged and retried at the next one.
pub async fn keep_registered(
    mut redis: ConnectionManager,
    entry: MediaNodeEntry,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut failing = false;
    loop {
        tick.tick().await;
        match tokio::time::timeout(TTL, beat(&mut redis, &entry, metrics.room_count())).await {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!(node = %entry.id, "cluster state (Redis) reachable again");
                }
                failing = false;
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(node = %entry.id, error = %e, "media node heartbeat failed");
                }
                failing = true;
            }
            Err(_) => {
                if !failing {
                    tracing::warn!(node = %entry.id, "media node heartbeat timed out");
                }
                failing = true;
            }
        }
    }
}
