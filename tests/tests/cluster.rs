//! Two `hush-server` nodes sharing a real Redis (`redis-server`, started
//! on a free loopback port for each test): a room lives on one node and
//! any node serves any participant.
//!
//! - Three members joined through different nodes are in one call: each
//!   hears the others' tones, each pair agrees on its safety number, and a
//!   member that leaves and rejoins through the other node costs nobody a
//!   frame to a key change.
//! - Ten rooms opened through one node are spread over both by load,
//!   each on exactly one node.
//! - With Redis gone, a call in progress keeps its media and a new join
//!   is refused with `cluster_unavailable`; once Redis is back, joins
//!   succeed again.
//!
//! Timeouts are hang guards; measured times are printed.

use std::time::{Duration, Instant};

use hush::local::{LocalServer, NodeMedia, RedisServer as Redis, SfuNode};
use hush_client::participant::{Observed, Participant, ParticipantSpec};
use hush_e2ee::Identity;
use hush_proto::ServerSecret;
use hush_tests::{assert_heard_tones, assert_no_frame_lost, join, spec, stats, until_decrypted};

/// Two nodes of one cluster.
async fn two_nodes(redis: &Redis) -> (LocalServer, LocalServer) {
    let (secret, _) = ServerSecret::generate_development().expect("a secret");
    let a = LocalServer::start_node(secret.clone(), &redis.url(), "node-a")
        .await
        .expect("node a");
    let b = LocalServer::start_node(secret, &redis.url(), "node-b")
        .await
        .expect("node b");
    (a, b)
}

/// One line's value in a node's `/metrics`.
fn gauge(node: &LocalServer, line: &str) -> Option<String> {
    node.handle
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ').map(str::to_owned))
}

/// Waits (bounded) until a node's `/metrics` line has `value`.
async fn until_gauge(node: &LocalServer, line: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while gauge(node, line).as_deref() != Some(value) {
        assert!(
            Instant::now() < deadline,
            "hang guard: {line} is {:?}, not {value}",
            gauge(node, line)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(redis: &Redis) -> hush_signaling::cluster::ClusterStatus {
    hush_signaling::cluster::status(&redis.url())
        .await
        .expect("cluster status")
}

/// Waits (bounded) until the cluster's status satisfies `ok`.
async fn until_status(
    redis: &Redis,
    ok: impl Fn(&hush_signaling::cluster::ClusterStatus) -> bool,
) -> hush_signaling::cluster::ClusterStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(redis).await;
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: cluster status {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_joined_through_different_nodes_are_in_one_call() {
    let redis = Redis::start().expect("redis-server");
    let (a, b) = two_nodes(&redis).await;
    let room = "cross-node";
    // Each member's view of the others' safety numbers, as they join.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watched = |server: &LocalServer, name: &str, hz: f64| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let seen_tx = seen_tx.clone();
        let me = name.to_owned();
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                if let Observed::PeerJoined {
                    name,
                    safety_number,
                    ..
                } = o
                {
                    let _ = seen_tx.send((me.clone(), name, safety_number));
                }
            }
        });
        ParticipantSpec {
            observer: Some(tx),
            ..spec(server, room, name, hz)
        }
    };
    let ann = join(watched(&a, "ann", 440.0)).await;
    let bob = join(watched(&b, "bob", 550.0)).await;
    let cat = join(watched(&b, "cat", 660.0)).await;
    for p in [&ann, &bob, &cat] {
        until_decrypted(p, 100).await;
    }
    let placed = until_status(&redis, |s| s.placements.contains_key(room)).await;
    println!("status: {placed:?}");
    assert_eq!(
        placed.placements[room], "node-a",
        "the room lives where its first member joined"
    );
    // Every member is on node a; two came through node b.
    assert_eq!(placed.nodes["node-a"].participants, 3);
    assert_eq!(placed.nodes["node-b"].participants, 0);
    let relayed = gauge(&b, "hush_cluster_relayed_connections_total");
    assert_eq!(relayed.as_deref(), Some("2"), "node b relayed bob and cat");

    // bob leaves and rejoins through the other node.
    let bob_first = bob.stop().await.expect("bob leaves");
    let bob = join(watched(&a, "bob", 550.0)).await;
    until_decrypted(&bob, 100).await;
    let before = (stats(&ann).await.decrypted, stats(&cat).await.decrypted);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (stats(&ann).await.decrypted, stats(&cat).await.decrypted);
    assert!(
        after.0 > before.0 + 50 && after.1 > before.1 + 50,
        "{before:?} → {after:?}"
    );

    let reports = [
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
        cat.stop().await.expect("cat"),
    ];
    assert_no_frame_lost(&[&reports[0], &reports[1], &reports[2], &bob_first]);
    let tones = [("ann", 440.0), ("bob", 550.0), ("cat", 660.0)];
    assert_heard_tones(&reports.iter().collect::<Vec<_>>(), &tones);
    // Each pair agrees on its safety number (the latest stay of each).
    drop(seen_tx);
    let mut numbers = std::collections::BTreeMap::new();
    while let Ok((me, peer, number)) = seen.try_recv() {
        numbers.insert((me, peer), number);
    }
    for (x, y) in [("ann", "bob"), ("ann", "cat"), ("bob", "cat")] {
        let xy = numbers.get(&(x.to_owned(), y.to_owned()));
        let yx = numbers.get(&(y.to_owned(), x.to_owned()));
        assert!(xy.is_some(), "{x} saw {y}'s safety number: {numbers:?}");
        assert_eq!(xy, yx, "{x} and {y} agree");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_are_spread_over_the_nodes_by_load() {
    let redis = Redis::start().expect("redis-server");
    let (a, b) = two_nodes(&redis).await;
    let mut members = Vec::new();
    // Every member comes through node a: placement, not the entry node,
    // decides where a room lives.
    for i in 0..10 {
        members.push(join(spec(&a, &format!("room-{i}"), "m", 440.0)).await);
        // One room at a time, each member in before the next placement.
        until_status(&redis, |s| {
            s.nodes.values().map(|n| n.participants).sum::<usize>() == i + 1
        })
        .await;
    }
    let s = until_status(&redis, |s| s.placements.len() == 10).await;
    println!("status: {s:?}");
    let on = |node: &str| s.placements.values().filter(|n| *n == node).count();
    assert_eq!((on("node-a"), on("node-b")), (5, 5), "{:?}", s.placements);
    // Each room's member is on the room's node, so no room spans two.
    assert_eq!(s.nodes["node-a"].participants, 5);
    assert_eq!(s.nodes["node-b"].participants, 5);
    // Each node's /metrics shows the cluster as its last heartbeat read it.
    for node in [&a, &b] {
        until_gauge(node, "hush_cluster_node_rooms{node=\"node-a\"}", "5").await;
        until_gauge(node, "hush_cluster_node_rooms{node=\"node-b\"}", "5").await;
        assert_eq!(gauge(node, "hush_cluster_nodes").as_deref(), Some("2"));
        assert_eq!(gauge(node, "hush_cluster_redis_up").as_deref(), Some("1"));
    }
    for m in members {
        m.stop().await.expect("leaves");
    }
    // Empty rooms are let go.
    until_status(&redis, |s| s.placements.is_empty()).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_calls_go_on_and_joins_are_refused_until_it_returns() {
    let mut redis = Redis::start().expect("redis-server");
    let (a, b) = two_nodes(&redis).await;
    let room = "outage";
    let ann = join(spec(&a, room, "ann", 440.0)).await;
    let bob = join(spec(&b, room, "bob", 550.0)).await;
    until_decrypted(&ann, 50).await;
    until_decrypted(&bob, 50).await;

    redis.stop();
    let before = (stats(&ann).await.decrypted, stats(&bob).await.decrypted);
    // A join is refused: the call ends before it was joined.
    let error = match Participant::start(spec(&b, room, "cat", 660.0), Identity::generate()).await {
        Err(e) => e.to_string(),
        Ok(cat) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cat.stop()
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        }
    };
    println!("join during the outage: {error}");
    assert!(error.contains("cluster_unavailable"), "{error}");
    until_gauge(&a, "hush_cluster_redis_up", "0").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (stats(&ann).await.decrypted, stats(&bob).await.decrypted);
    assert!(
        after.0 > before.0 + 50 && after.1 > before.1 + 50,
        "media goes on: {before:?} → {after:?}"
    );

    // Redis comes back (empty): the nodes register again at their next
    // beat, node a with its room.
    let redis = Redis::start_on(redis.port).expect("redis-server again");
    let started = Instant::now();
    until_status(&redis, |s| {
        s.nodes.len() == 2 && s.placements.get(room).map(String::as_str) == Some("node-a")
    })
    .await;
    println!(
        "the cluster's state was back {:?} after Redis",
        started.elapsed()
    );
    until_gauge(&a, "hush_cluster_redis_up", "1").await;
    let cat = join(spec(&b, room, "cat", 660.0)).await;
    until_decrypted(&cat, 50).await;
    println!(
        "a join through node b heard the room {:?} after Redis came back",
        started.elapsed()
    );
    for p in [ann, bob, cat] {
        p.stop().await.expect("leaves");
    }
    a.stop().await;
    b.stop().await;
}

/// Two signaling nodes without an SFU of their own, and two `hush-sfu`
/// media nodes registered in the same Redis (`hush-sfu --redis`).
async fn signaling_and_media_nodes(redis: &Redis) -> (LocalServer, LocalServer, SfuNode, SfuNode) {
    let (secret, _) = ServerSecret::generate_development().expect("a secret");
    let (control, _) = ServerSecret::generate_development().expect("a control secret");
    let s1 = SfuNode::start_registered(control.clone(), &redis.url(), "sfu-1")
        .await
        .expect("media node 1");
    let s2 = SfuNode::start_registered(control.clone(), &redis.url(), "sfu-2")
        .await
        .expect("media node 2");
    let media = NodeMedia {
        embedded: false,
        control_secret: Some(control),
    };
    let a = LocalServer::start_cluster_node(secret.clone(), &redis.url(), "node-a", media.clone())
        .await
        .expect("node a");
    let b = LocalServer::start_cluster_node(secret, &redis.url(), "node-b", media)
        .await
        .expect("node b");
    (a, b, s1, s2)
}

/// Rooms a media node's SFU holds now (what its heartbeat reports).
fn rooms_held(node: &SfuNode) -> usize {
    node.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("hush_sfu_rooms "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Packets a media node forwarded.
fn forwarded(node: &SfuNode) -> u64 {
    node.metrics()
        .lines()
        .filter(|l| l.starts_with("hush_sfu_packets_out_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_of_two_signaling_nodes_share_one_media_node() {
    let redis = Redis::start().expect("redis-server");
    let (a, b, s1, s2) = signaling_and_media_nodes(&redis).await;
    assert!(a.sfu_udp_addrs().is_empty() && b.sfu_udp_addrs().is_empty());
    let room = "on-a-media-node";
    let ann = join(spec(&a, room, "ann", 440.0)).await;
    let bob = join(spec(&b, room, "bob", 550.0)).await;
    let cat = join(spec(&b, room, "cat", 660.0)).await;
    for p in [&ann, &bob, &cat] {
        until_decrypted(p, 100).await;
    }
    let s = until_status(&redis, |s| s.media.contains_key(room)).await;
    let placed_at = Instant::now();
    println!("status: {s:?}");
    assert_eq!(s.placements[room], "node-a");
    let (used, idle) = match s.media[room].as_str() {
        "sfu-1" => (&s1, &s2),
        "sfu-2" => (&s2, &s1),
        other => panic!("media placed on {other}"),
    };
    // bob leaves and rejoins through the other signaling node.
    let bob_first = bob.stop().await.expect("bob leaves");
    let bob = join(spec(&a, room, "bob", 550.0)).await;
    until_decrypted(&bob, 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "forwarded: {} by the room's media node, {} by the other",
        forwarded(used),
        forwarded(idle)
    );
    assert!(forwarded(used) > 500, "the room's media node carried it");
    assert_eq!(forwarded(idle), 0, "no room spans two media nodes");
    // The room's node keeps the media placement past its 5 s expiry.
    if let Some(left) = Duration::from_secs(6).checked_sub(placed_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(status(&redis).await.media.get(room), s.media.get(room));
    let reports = [
        ann.stop().await.expect("ann"),
        bob.stop().await.expect("bob"),
        cat.stop().await.expect("cat"),
    ];
    assert_no_frame_lost(&[&reports[0], &reports[1], &reports[2], &bob_first]);
    let tones = [("ann", 440.0), ("bob", 550.0), ("cat", 660.0)];
    assert_heard_tones(&reports.iter().collect::<Vec<_>>(), &tones);
    a.stop().await;
    b.stop().await;
    s1.stop().await;
    s2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_media_is_spread_over_the_media_nodes_by_load() {
    let redis = Redis::start().expect("redis-server");
    let (a, b, s1, s2) = signaling_and_media_nodes(&redis).await;
    let mut members = Vec::new();
    for i in 0..6 {
        let entry = if i % 2 == 0 { &a } else { &b };
        members.push(join(spec(entry, &format!("room-{i}"), "m", 440.0)).await);
        // The media nodes' SFUs hold the room (what their heartbeats
        // report), and Redis has it, before the next placement.
        let deadline = Instant::now() + Duration::from_secs(15);
        while rooms_held(&s1) + rooms_held(&s2) != i + 1 {
            assert!(
                Instant::now() < deadline,
                "hang guard: room {i} reached its media node"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        until_status(&redis, |s| {
            s.media_nodes.values().map(|n| n.rooms).sum::<usize>() == i + 1
        })
        .await;
    }
    let s = until_status(&redis, |s| s.media.len() == 6).await;
    println!("status: {s:?}");
    let on = |node: &str| s.media.values().filter(|n| *n == node).count();
    assert_eq!((on("sfu-1"), on("sfu-2")), (3, 3), "{:?}", s.media);
    assert_eq!(s.media_nodes["sfu-1"].rooms, 3);
    assert_eq!(s.media_nodes["sfu-2"].rooms, 3);
    for m in members {
        m.stop().await.expect("leaves");
    }
    // Ended rooms let their media placement go.
    until_status(&redis, |s| {
        s.media.is_empty() && s.media_nodes.values().all(|n| n.rooms == 0)
    })
    .await;
    a.stop().await;
    b.stop().await;
    s1.stop().await;
    s2.stop().await;
}

/// A member whose observations the test reads: warnings and closings.
struct Watched {
    p: Participant,
    seen: tokio::sync::mpsc::UnboundedReceiver<Observed>,
}

impl Watched {
    async fn join(server: &LocalServer, room: &str, name: &str, hz: f64) -> Self {
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let spec = ParticipantSpec {
            observer: Some(tx),
            ..spec(server, room, name, hz)
        };
        Self {
            p: join(spec).await,
            seen,
        }
    }

    /// Waits for a warning containing `text`; fails on a closing.
    async fn warned(&mut self, text: &str) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(o) = self.seen.recv().await {
                match o {
                    Observed::Warning(w) if w.contains(text) => return,
                    Observed::Closing(reason) => panic!("closed ({reason:?}) instead"),
                    Observed::PeerLeft { name } => panic!("{name} left instead"),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("hang guard: no warning {text:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_media_node_moves_the_rooms_media_to_another() {
    let redis = Redis::start().expect("redis-server");
    let (a, b, s1, s2) = signaling_and_media_nodes(&redis).await;
    let room = "moving";
    let mut ann = Watched::join(&a, room, "ann", 440.0).await;
    let mut bob = Watched::join(&b, room, "bob", 550.0).await;
    until_decrypted(&ann.p, 50).await;
    until_decrypted(&bob.p, 50).await;
    let s = until_status(&redis, |s| s.media.contains_key(room)).await;
    let lost = s.media[room].clone();
    let (dying, other) = if lost == "sfu-1" { (s1, s2) } else { (s2, s1) };
    let keys_before = (
        stats(&ann.p).await.lost_to_key_change,
        stats(&bob.p).await.lost_to_key_change,
    );

    // The room's media node goes away: both members are told
    // `media_moved` and offer a new media connection, which goes to the
    // other node. Nobody leaves, nobody's keys change.
    let killed = Instant::now();
    dying.stop().await;
    ann.warned("media moved").await;
    bob.warned("media moved").await;
    let at = (stats(&ann.p).await.decrypted, stats(&bob.p).await.decrypted);
    tokio::time::timeout(Duration::from_secs(20), async {
        while stats(&ann.p).await.decrypted < at.0 + 1 || stats(&bob.p).await.decrypted < at.1 + 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("hang guard: frames again after the move");
    println!(
        "media node {lost} stopped: both members decrypted again {:?} later, without rejoining",
        killed.elapsed()
    );
    until_decrypted(&ann.p, at.0 + 100).await;
    until_decrypted(&bob.p, at.1 + 100).await;
    let s = status(&redis).await;
    assert_ne!(s.media.get(room), Some(&lost), "{s:?}");
    assert!(
        forwarded(&other) > 100,
        "the other node carries the room now"
    );
    let mut reports = Vec::new();
    for (w, before) in [(ann, keys_before.0), (bob, keys_before.1)] {
        let r = w.p.stop().await.expect("leaves");
        assert!(
            r.stats.failed.is_empty(),
            "{}: {:?}",
            r.name,
            r.stats.failed
        );
        assert_eq!(
            r.stats.lost_to_key_change, before,
            "{}: the keys did not change",
            r.name
        );
        reports.push(r);
    }
    assert_heard_tones(
        &reports.iter().collect::<Vec<_>>(),
        &[("ann", 440.0), ("bob", 550.0)],
    );
    a.stop().await;
    b.stop().await;
    other.stop().await;
}
