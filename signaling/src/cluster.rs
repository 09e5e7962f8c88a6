//! Several `hush-server` nodes as one service, coordinated through Redis
//! (`--redis`). The model is LiveKit's: a room lives on one node — its
//! members, key packages, envelopes and media (that node's embedded SFU) —
//! and any node serves any participant. A node that takes a `join` for a
//! room placed elsewhere relays that connection, frame for frame, to the
//! room's node over a WebSocket of its own (`relay`); token checks,
//! limits and error codes are then exactly those of one node, because
//! one node applies them, and media flows from the client straight to
//! the room's SFU.
//!
//! What Redis holds (standalone Redis; every key under `hush:`):
//!
//! - `hush:nodes`: the set of node ids;
//! - `hush:node:{id}`: a hash (`url`, `capacity`, `rooms`,
//!   `participants`) that expires unless the node refreshes it (every
//!   [`ClusterConfig::heartbeat`], lasting [`ClusterConfig::ttl`]);
//! - `hush:node:{id}:rooms`: a hash room → members on that node, same expiry;
//! - `hush:room:{room}`: the id of the node the room is placed on, same
//!   expiry, refreshed by that node while the room has members.
//!
//! Placement is one Lua script, so two nodes never place one room twice:
//! a room whose node is alive stays there; otherwise it goes to the live
//! node with the fewest rooms (and room to spare), which counts it at once.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub redis_url: String,
    /// This node's id (unique in the cluster).
    pub node_id: String,
    /// Where other nodes reach this node's `/v1/ws` (`ws://HOST:PORT`).
    pub node_url: String,
    /// Most rooms placed on this node.
    pub capacity: usize,
    /// How often the node refreshes its entry and its rooms' placement.
    pub heartbeat: Duration,
    /// How long an entry lasts without a refresh: a node silent this long
    /// is taken as dead and its rooms may be placed elsewhere.
    pub ttl: Duration,
    /// Most rooms whose media this node's embedded SFU carries; 0 when it
    /// has none (`--no-media`). It registers as a media node of its own.
    pub embedded_media_capacity: usize,
    /// Whether this node may place media on standalone `hush-sfu` nodes
    /// (it holds their control secret).
    pub remote_media: bool,
    /// TLS settings for other nodes' `wss://` URLs (`None`: Mozilla's
    /// roots alone, made when first needed).
    pub node_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Where a room's media goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaNode {
    /// This node's embedded SFU.
    Embedded,
    /// A standalone `hush-sfu` node.
    Remote {
        /// Its id.
        id: String,
        /// Its control API, `http://HOST:PORT`.
        url: String,
    },
}

impl ClusterConfig {
    /// A node with the default timings (heartbeat 1 s, expiry 5 s) and capacity (1,000 rooms).
    pub fn new(redis_url: &str, node_id: &str, node_url: &str) -> Self {
        Self {
            redis_url: redis_url.to_owned(),
            node_id: node_id.to_owned(),
            node_url: node_url.to_owned(),
            capacity: 1_000,
            heartbeat: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
            embedded_media_capacity: 1_000,
            remote_media: false,
            node_tls: None,
        }
    }
}

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis refused, failed or did not answer in time.
    #[error("cluster state (Redis) unavailable: {0}")]
    Redis(String),
    /// Every live node is at its room capacity.
    #[error("no node has room for another room")]
    Full,
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e.to_string())
    }
}

/// Where a room lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node.
    Local,
    /// On another node, reached at this URL.
    Remote {
        /// The node's id.
        node: String,
        /// Its `ws://HOST:PORT`.
        url: String,
    },
}

/// A node's view of the cluster, as `hush-server cluster status` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Live nodes by id: URL, capacity, rooms, participants.
    pub nodes: BTreeMap<String, NodeStatus>,
    /// Room → node id.
    pub placements: BTreeMap<String, String>,
    /// Live media nodes by id: control URL (`embedded` for a node's own
    /// SFU), capacity, rooms.
    pub media_nodes: BTreeMap<String, NodeStatus>,
    /// Room → media node id.
    pub media: BTreeMap<String, String>,
}

/// One live node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Where other nodes reach it.
    pub url: String,
    /// Most rooms it takes.
    pub capacity: usize,
    /// Rooms on it.
    pub rooms: usize,
    /// Participants on it.
    pub participants: usize,
}

/// Every Redis call is bounded: a stalled Redis must not stall a join.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The placement script: KEYS[1] the room's key; ARGV[1] the expiry (ms),
/// ARGV[2] the room. A room some live node still has members in (its
/// placement expired, or Redis lost it) stays on that node.
const PLACE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', 'hush:node:' .. cur) == 1 then return cur end
for _, id in ipairs(redis.call('SMEMBERS', 'hush:nodes')) do
  if redis.call('EXISTS', 'hush:node:' .. id) == 1 and redis.call('HEXISTS', 'hush:node:' .. id .. ':rooms', ARGV[2]) == 1 then
    redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
    return id
  end
end
local best, best_rooms = nil, nil
for _, id in ipairs(redis.call('SMEMBERS', 'hush:nodes')) do
  local key = 'hush:node:' .. id
  if redis.call('EXISTS', key) == 1 then
    local rooms = tonumber(redis.call('HGET', key, 'rooms') or '0')
    local cap = tonumber(redis.call('HGET', key, 'capacity') or '0')
    if rooms < cap and (best == nil or rooms < best_rooms or (rooms == best_rooms and id < best)) then
      best, best_rooms = id, rooms
    end
  else
    redis.call('SREM', 'hush:nodes', id)
  end
end
if best == nil then return false end
redis.call('SET', KEYS[1], best, 'PX', ARGV[1])
redis.call('HINCRBY', 'hush:node:' .. best, 'rooms', 1)
return best
";

/// Keeps placements while their node still holds them (or nobody does):
/// KEYS the rooms' keys; ARGV[1] the node id, ARGV[2] the expiry (ms).
/// One call per heartbeat, however many rooms.
const KEEP: &str = r"
local kept = 0
for _, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == false or cur == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    kept = kept + 1
  end
end
return kept
";

/// The media placement script: KEYS[1] the room's media key; ARGV[1] the
/// expiry (ms), ARGV[2] the calling node's id, ARGV[3] `1` when it may use
/// standalone nodes, ARGV[4] the ids the caller found dead (`,`-separated,
/// their entries not yet expired). A live media node the room already has
/// stays (unless it is another node's embedded SFU, or a standalone one
/// the caller cannot drive); otherwise the usable node with the fewest
/// rooms and room to spare. Returns `{id, url}`, or false when none has room.
const PLACE_MEDIA: &str = r"
local function usable(id, url)
  if string.find(',' .. ARGV[4] .. ',', ',' .. id .. ',', 1, true) then return false end
  if url == 'embedded' then return id == ARGV[2] end
  return ARGV[3] == '1' and string.sub(url, 1, 7) == 'http://'
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local url = redis.call('HGET', 'hush:sfu:' .. cur, 'url')
  if url and usable(cur, url) then return {cur, url} end
end
local best, best_rooms, best_url = nil, nil, nil
for _, id in ipairs(redis.call('SMEMBERS', 'hush:sfus')) do
  local key = 'hush:sfu:' .. id
  local url = redis.call('HGET', key, 'url')
  if url == false then
    redis.call('SREM', 'hush:sfus', id)
  elseif usable(id, url) then
    local rooms = tonumber(redis.call('HGET', key, 'rooms') or '0')
    local cap = tonumber(redis.call('HGET', key, 'capacity') or '0')
    if rooms < cap and (best == nil or rooms < best_rooms or (rooms == best_rooms and id < best)) then
      best, best_rooms, best_url = id, rooms, url
    end
  end
end
if best == nil then return false end
redis.call('SET', KEYS[1], best, 'PX', ARGV[1])
redis.call('HINCRBY', 'hush:sfu:' .. best, 'rooms', 1)
return {best, best_url}
";

/// Keeps rooms' media placements as this node last placed them: KEYS the
/// rooms' media keys, ARGV[1] the expiry (ms), ARGV[i + 1] the media node
/// of KEYS[i]. A key that names another node (placed since) is left alone.
const KEEP_MEDIA: &str = r"
local kept = 0
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == false or cur == ARGV[i + 1] then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
    kept = kept + 1
  end
end
return kept
";

/// Lets a placement go if it is still this node's: KEYS[1], ARGV[1] the node id.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// One node's membership in the cluster.
pub struct Cluster {
    config: ClusterConfig,
    redis: ConnectionManager,
    /// The addresses of live nodes: their relayed connections are exempt
    /// from the per-address connection cap (they carry many clients).
    node_ips: Mutex<HashSet<IpAddr>>,
    /// The rooms this node placed or refreshed last time.
    held: Mutex<HashSet<String>>,
    /// Live nodes and their rooms, as the last heartbeat read them.
    view: Mutex<BTreeMap<String, usize>>,
    /// Media nodes this node found dead, and when (left out of placement
    /// until their entries expire).
    dead_media: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Where the media of each room held here goes, and since when.
    media: Mutex<std::collections::HashMap<String, (MediaNode, std::time::Instant)>>,
    /// Whether the last heartbeat reached Redis.
    reachable: std::sync::atomic::AtomicBool,
    /// Set by [`Cluster::leave`]: no more heartbeats.
    left: std::sync::atomic::AtomicBool,
}

impl core::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis and registers this node.
    pub async fn connect(config: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let redis = connect(&config.redis_url).await?;
        let cluster = Arc::new(Self {
            config,
            redis,
            node_ips: Mutex::new(HashSet::new()),
            held: Mutex::new(HashSet::new()),
            view: Mutex::new(BTreeMap::new()),
            media: Mutex::new(std::collections::HashMap::new()),
            dead_media: Mutex::new(std::collections::HashMap::new()),
            reachable: std::sync::atomic::AtomicBool::new(true),
            left: std::sync::atomic::AtomicBool::new(false),
        });
        cluster.heartbeat(&[]).await?;
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The TLS settings for reaching other nodes at `wss://` URLs.
    pub fn node_tls(&self) -> Result<Arc<rustls::ClientConfig>, crate::TlsError> {
        match &self.config.node_tls {
            Some(config) => Ok(Arc::clone(config)),
            None => crate::tls::node_client_config(None),
        }
    }

    /// How often [`Cluster::heartbeat`] should run.
    pub fn heartbeat_every(&self) -> Duration {
        self.config.heartbeat
    }

    /// Where `room` lives, placing it if it has no live node.
    pub async fn place(&self, room: &str) -> Result<Placement, ClusterError> {
        let mut redis = self.redis.clone();
        let node: Option<String> = bounded(
            redis::Script::new(PLACE)
                .key(room_key(room))
                .arg(millis(self.config.ttl))
                .arg(room)
                .invoke_async(&mut redis),
        )
        .await?;
        let node = node.ok_or(ClusterError::Full)?;
        if node == self.config.node_id {
            self.lock_held().insert(room.to_owned());
            self.place_media(room).await?;
            return Ok(Placement::Local);
        }
        let url: Option<String> = bounded(redis.hget(node_key(&node), "url")).await?;
        match url {
            Some(url) => Ok(Placement::Remote { node, url }),
            // The node expired between the two calls: try once more.
            None => Err(ClusterError::Redis(format!("node {node} vanished"))),
        }
    }

    /// Places the media of `room`, held here, unless it has a place.
    pub async fn place_media(&self, room: &str) -> Result<(), ClusterError> {
        if self.lock_media().contains_key(room) {
            return Ok(());
        }
        if !self.config.remote_media {
            // Only the embedded SFU (or no media at all): nothing to choose.
            if self.config.embedded_media_capacity > 0 {
                self.lock_media().insert(
                    room.to_owned(),
                    (MediaNode::Embedded, std::time::Instant::now()),
                );
            }
            return Ok(());
        }
        let mut redis = self.redis.clone();
        let dead = {
            let mut dead = self
                .dead_media
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            dead.retain(|_, at| at.elapsed() < self.config.ttl * 2);
            dead.keys().cloned().collect::<Vec<_>>().join(",")
        };
        let placed: Option<(String, String)> = bounded(
            redis::Script::new(PLACE_MEDIA)
                .key(media_key(room))
                .arg(millis(self.config.ttl))
                .arg(&self.config.node_id)
                .arg(u8::from(self.config.remote_media))
                .arg(dead)
                .invoke_async(&mut redis),
        )
        .await?;
        let node = match placed {
            Some((_, url)) if url == "embedded" => MediaNode::Embedded,
            Some((id, url)) => MediaNode::Remote { id, url },
            // Every media node is full or gone: this node's own SFU, if any.
            None if self.config.embedded_media_capacity > 0 => MediaNode::Embedded,
            None => return Err(ClusterError::Full),
        };
        tracing::info!(room, media = ?node, "media placed");
        self.lock_media()
            .insert(room.to_owned(), (node, std::time::Instant::now()));
        Ok(())
    }

    /// The media node at `url` stopped answering: the rooms whose media it
    /// carried are placed anew at their next join, never on it again until
    /// its entry expires.
    pub fn media_node_lost(&self, url: &str) {
        let (rooms, id) = {
            let mut media = self.lock_media();
            let mut id = None;
            let rooms: Vec<String> = media
                .iter()
                .filter_map(|(room, (node, _))| match node {
                    MediaNode::Remote { id: i, url: u } if u == url => {
                        id = Some(i.clone());
                        Some(room.clone())
                    }
                    _ => None,
                })
                .collect();
            for room in &rooms {
                media.remove(room);
            }
            (rooms, id)
        };
        if let Some(id) = id {
            tracing::warn!(node = %id, %url, rooms = rooms.len(), "media node lost; its rooms' media will be placed anew");
            self.dead_media
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, std::time::Instant::now());
        }
        // Their media keys still name the lost node: the placement script
        // leaves it out (it is in `dead_media`) and overwrites them.
    }

    /// Where the media of `room` goes, if it was placed here.
    pub fn media_of(&self, room: &str) -> Option<MediaNode> {
        self.lock_media().get(room).map(|(node, _)| node.clone())
    }

    #[allow(clippy::type_complexity)]
    fn lock_media(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (MediaNode, std::time::Instant)>>
    {
        self.media.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refreshes this node's entry and the placement of its rooms (room,
    /// members here); lets go of rooms it no longer has. Also learns the
    /// live nodes' addresses.
    pub async fn heartbeat(&self, rooms: &[(String, usize)]) -> Result<(), ClusterError> {
        if self.left.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let beat = self.beat(rooms).await;
        self.reachable
            .store(beat.is_ok(), std::sync::atomic::Ordering::Relaxed);
        beat
    }

    async fn beat(&self, rooms: &[(String, usize)]) -> Result<(), ClusterError> {
        let mut redis = self.redis.clone();
        let ttl = millis(self.config.ttl);
        let id = &self.config.node_id;
        let participants: usize = rooms.iter().map(|(_, n)| n).sum();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                node_key(id),
                &[
                    ("url", self.config.node_url.clone()),
                    ("capacity", self.config.capacity.to_string()),
                    ("rooms", rooms.len().to_string()),
                    ("participants", participants.to_string()),
                ],
            )
            .ignore()
            .pexpire(node_key(id), ttl as i64)
            .ignore()
            .sadd("hush:nodes", id)
            .ignore()
            .del(format!("{}:rooms", node_key(id)))
            .ignore();
        if !rooms.is_empty() {
            let counts: Vec<(&str, usize)> = rooms.iter().map(|(r, n)| (r.as_str(), *n)).collect();
            pipe.hset_multiple(format!("{}:rooms", node_key(id)), &counts)
                .ignore()
                .pexpire(format!("{}:rooms", node_key(id)), ttl as i64)
                .ignore();
        }
        // The rooms' media placements, and this node's embedded SFU as a media node.
        let media: Vec<(String, String)> = self
            .lock_media()
            .iter()
            .filter(|(room, _)| rooms.iter().any(|(r, _)| r == *room))
            .map(|(room, (node, _))| {
                let id = match node {
                    MediaNode::Embedded => self.config.node_id.clone(),
                    MediaNode::Remote { id, .. } => id.clone(),
                };
                (media_key(room), id)
            })
            .collect();
        bounded(pipe.query_async::<()>(&mut redis)).await?;
        if !media.is_empty() {
            // Compare and set: a placement made since this beat read its
            // rooms (a member moved off a lost node) is never written back.
            let script = redis::Script::new(KEEP_MEDIA);
            let mut keep = script.prepare_invoke();
            keep.arg(ttl);
            for (key, id) in &media {
                keep.key(key).arg(id);
            }
            let _: i64 = bounded(keep.invoke_async(&mut redis)).await?;
        }
        if self.config.embedded_media_capacity > 0 {
            let entry = hush_sfu::register::MediaNodeEntry {
                id: self.config.node_id.clone(),
                url: "embedded".to_owned(),
                capacity: self.config.embedded_media_capacity,
            };
            let embedded = self
                .lock_media()
                .values()
                .filter(|(n, _)| *n == MediaNode::Embedded)
                .count();
            bounded(async {
                hush_sfu::register::beat(&mut redis, &entry, embedded)
                    .await
                    .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))
            })
            .await?;
        }
        let now: HashSet<String> = rooms.iter().map(|(r, _)| r.clone()).collect();
        if !now.is_empty() {
            let script = redis::Script::new(KEEP);
            let mut keep = script.prepare_invoke();
            for room in &now {
                keep.key(room_key(room));
            }
            let _: i64 = bounded(keep.arg(id).arg(ttl).invoke_async(&mut redis)).await?;
        }
        let gone: Vec<String> = {
            let mut held = self.lock_held();
            let gone = held.difference(&now).cloned().collect();
            // Rooms placed here whose first member is still on its way stay
            // held until the next beat.
            *held = now.clone();
            gone
        };
        for room in gone {
            let _: i64 = bounded(
                redis::Script::new(RELEASE)
                    .key(room_key(&room))
                    .arg(id)
                    .invoke_async(&mut redis),
            )
            .await?;
        }
        // Media placements of rooms with nobody here any more go; one
        // placed in the last seconds may still be waiting for its first
        // member (placement and join are not one step).
        let ended: Vec<String> = {
            let mut media = self.lock_media();
            let ended: Vec<String> = media
                .iter()
                .filter(|(room, (_, at))| !now.contains(*room) && at.elapsed() > self.config.ttl)
                .map(|(room, _)| room.clone())
                .collect();
            for room in &ended {
                media.remove(room);
            }
            ended
        };
        for room in ended {
            let _: i64 = bounded(redis.del(media_key(&room))).await?;
        }
        // The live nodes' addresses and loads: one read per node, not per room.
        let ids: Vec<String> = bounded(redis.smembers("hush:nodes")).await?;
        let mut ips = HashSet::new();
        let mut view = BTreeMap::new();
        for node in ids {
            let (url, rooms): (Option<String>, Option<usize>) = bounded(
                redis::cmd("HMGET")
                    .arg(node_key(&node))
                    .arg("url")
                    .arg("rooms")
                    .query_async(&mut redis),
            )
            .await?;
            if let Some(url) = url {
                ips.extend(host_ip(&url));
                view.insert(node, rooms.unwrap_or(0));
            }
        }
        *self.node_ips.lock().unwrap_or_else(PoisonError::into_inner) = ips;
        *self.view.lock().unwrap_or_else(PoisonError::into_inner) = view;
        Ok(())
    }

    /// The cluster gauges of `/metrics`: whether Redis answered the last
    /// heartbeat, the live nodes, and the rooms each one holds.
    pub fn metrics_text(&self) -> String {
        use core::fmt::Write as _;
        let view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = format!(
            "# HELP hush_cluster_redis_up Whether the last heartbeat reached Redis (1) or not (0).\n\
             # TYPE hush_cluster_redis_up gauge\n\
             hush_cluster_redis_up {}\n\
             # HELP hush_cluster_nodes Live nodes of the cluster, as the last heartbeat read them.\n\
             # TYPE hush_cluster_nodes gauge\n\
             hush_cluster_nodes {}\n\
             # HELP hush_cluster_node_rooms Rooms each live node holds, as the last heartbeat read them.\n\
             # TYPE hush_cluster_node_rooms gauge\n",
            u8::from(self.reachable.load(std::sync::atomic::Ordering::Relaxed)),
            view.len()
        );
        for (node, rooms) in view.iter() {
            let _ = writeln!(
                out,
                "hush_cluster_node_rooms{{node=\"{}\"}} {rooms}",
                label_value(node)
            );
        }
        out
    }

    /// Whether `ip` is a live node's address (learnt at the last heartbeat).
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        self.node_ips
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&ip)
    }

    /// Leaves the cluster: this node's entry and its placements go now,
    /// not when they expire.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.left.store(true, std::sync::atomic::Ordering::Release);
        let mut redis = self.redis.clone();
        let held: Vec<String> = self.lock_held().drain().collect();
        let media: Vec<String> = self.lock_media().drain().map(|(room, _)| room).collect();
        for room in media {
            let _: i64 = bounded(redis.del(media_key(&room))).await?;
        }
        for room in held {
            let _: i64 = bounded(
                redis::Script::new(RELEASE)
                    .key(room_key(&room))
                    .arg(&self.config.node_id)
                    .invoke_async(&mut redis),
            )
            .await?;
        }
        let id = &self.config.node_id;
        bounded(
            redis::pipe()
                .del(node_key(id))
                .del(format!("{}:rooms", node_key(id)))
                .srem("hush:nodes", id)
                .del(hush_sfu::register::media_node_key(id))
                .srem(hush_sfu::register::MEDIA_NODES, id)
                .query_async::<()>(&mut redis),
        )
        .await
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cluster as Redis has it: live nodes and room placements.
pub async fn status(redis_url: &str) -> Result<ClusterStatus, ClusterError> {
    let mut redis = connect(redis_url).await?;
    status_with(&mut redis).await
}

async fn status_with(redis: &mut ConnectionManager) -> Result<ClusterStatus, ClusterError> {
    let ids: Vec<String> = bounded(redis.smembers("hush:nodes")).await?;
    let mut out = ClusterStatus::default();
    for id in ids {
        let fields: BTreeMap<String, String> = bounded(redis.hgetall(node_key(&id))).await?;
        if fields.is_empty() {
            continue; // expired
        }
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let rooms: BTreeMap<String, usize> =
            bounded(redis.hgetall(format!("{}:rooms", node_key(&id)))).await?;
        for room in rooms.keys() {
            let placed: Option<String> = bounded(redis.get(room_key(room))).await?;
            if placed.as_deref() == Some(id.as_str()) {
                out.placements.insert(room.clone(), id.clone());
            }
        }
        out.nodes.insert(
            id,
            NodeStatus {
                url: fields.get("url").cloned().unwrap_or_default(),
                capacity: number("capacity"),
                rooms: number("rooms"),
                participants: number("participants"),
            },
        );
    }
    let ids: Vec<String> = bounded(redis.smembers(hush_sfu::register::MEDIA_NODES)).await?;
    for id in ids {
        let fields: BTreeMap<String, String> =
            bounded(redis.hgetall(hush_sfu::register::media_node_key(&id))).await?;
        if fields.is_empty() {
            continue; // expired
        }
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        out.media_nodes.insert(
            id,
            NodeStatus {
                url: fields.get("url").cloned().unwrap_or_default(),
                capacity: number("capacity"),
                rooms: number("rooms"),
                participants: 0,
            },
        );
    }
    for room in out.placements.keys() {
        let media: Option<String> = bounded(redis.get(media_key(room))).await?;
        if let Some(media) = media {
            out.media.insert(room.clone(), media);
        }
    }
    Ok(out)
}

async fn connect(url: &str) -> Result<ConnectionManager, ClusterError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    bounded(ConnectionManager::new_with_config(client, config)).await
}

/// A Redis call that gives up after [`REDIS_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ClusterError> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClusterError::Redis("no answer in time".into())),
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn node_key(id: &str) -> String {
    format!("hush:node:{id}")
}

/// The media node a room's media goes to.
fn media_key(room: &str) -> String {
    format!("hush:media:{room}")
}

fn room_key(room: &str) -> String {
    format!("hush:room:{room}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The IP address in a `ws://HOST:PORT` URL, if HOST is one.
fn host_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_are_read_from_their_urls() {
        assert_eq!(
            host_ip("ws://10.0.0.5:7880"),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(host_ip("ws://[::1]:7880/"), Some("::1".parse().unwrap()));
        assert_eq!(host_ip("wss://example.org:443"), None);
        assert_eq!(
            host_ip("ws://127.0.0.1"),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
