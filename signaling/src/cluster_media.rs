//! The media of a cluster node (`hush-server --redis`): each room's media
//! goes where the cluster placed it ([`Cluster::media_of`]), to this
//! node's embedded SFU or to a standalone `hush-sfu` node driven through
//! its control API ([`RemoteSfu`]). A member's requests follow the route
//! chosen when it was added.
//!
//! When a media node stops answering or shuts down, each of its members
//! is moved: the room's media is placed anew (never on the lost node), the
//! member is added there, and it gets `media_moved`, upon which the client
//! offers a new media connection; its membership and keys are untouched.
//! If no node can take the room, the member gets `closing` with
//! `media_moved` and joins again later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use hush_proto::{ErrorCode, IceCandidate, ParticipantId, RoomId, ServerMessage, ServerSecret};

use crate::cluster::{Cluster, MediaNode};
use crate::embedded::EmbeddedSfu;
use crate::error::Error;
use crate::media::{MediaRouter, MediaSink};
use crate::remote::{RemoteNode, RemoteSfu};

/// Where one member's media goes, and what moving it needs.
#[derive(Clone)]
struct Routed {
    route: Arc<dyn MediaRouter>,
    /// The media node's control URL; `None` for the embedded SFU, or while
    /// the member is being moved.
    node: Option<String>,
    room: RoomId,
    sink: MediaSink,
}

/// [`MediaRouter`] of a cluster node: per room, embedded or a media node.
pub struct ClusterMedia {
    /// The embedded SFU's router.
    embedded_route: Option<Arc<dyn MediaRouter>>,
    control_secret: Option<ServerSecret>,
    cluster: OnceLock<Arc<Cluster>>,
    /// One router per media node, by control URL.
    remotes: Mutex<HashMap<String, Arc<RemoteSfu>>>,
    /// Where each member's media went.
    routes: Mutex<HashMap<ParticipantId, Routed>>,
    /// Itself, for the media nodes' loss callbacks.
    me: Weak<ClusterMedia>,
}

impl core::fmt::Debug for ClusterMedia {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClusterMedia")
            .field("embedded", &self.embedded_route.is_some())
            .field("remote", &self.control_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl ClusterMedia {
    /// A node's media: its embedded SFU (if it has one) and, with the
    /// media nodes' control secret, the cluster's standalone nodes.
    pub fn new(embedded: Option<hush_sfu::Sfu>, control_secret: Option<ServerSecret>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            embedded_route: embedded
                .as_ref()
                .map(|sfu| Arc::new(EmbeddedSfu::new(sfu.clone())) as Arc<dyn MediaRouter>),
            control_secret,
            cluster: OnceLock::new(),
            remotes: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Starts following the cluster's media placements (once; later calls
    /// change nothing). Before it, every room's media is embedded.
    pub fn attach(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, Routed>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The router of the room's media node, and that node's URL (`None`:
    /// the embedded SFU).
    fn route_for(&self, room: &RoomId) -> Result<(Arc<dyn MediaRouter>, Option<String>), Error> {
        let placed = self.cluster.get().and_then(|c| c.media_of(room.as_str()));
        match (placed, &self.control_secret) {
            (Some(MediaNode::Remote { id, url }), Some(secret)) => {
                let mut remotes = self.remotes.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(r) = remotes.get(&url) {
                    return Ok((Arc::clone(r) as Arc<dyn MediaRouter>, Some(url)));
                }
                let node = RemoteNode::new(&url, secret.clone()).map_err(|e| {
                    tracing::warn!(node = %id, error = %e, "media node with an unusable URL");
                    Error::MediaUnavailable
                })?;
                let me = self.me.clone();
                let lost_url = url.clone();
                let router = Arc::new(RemoteSfu::with_on_lost(
                    node,
                    Arc::new(move |_member| {
                        if let Some(me) = me.upgrade() {
                            me.media_lost(&lost_url);
                        }
                    }),
                ));
                remotes.insert(url.clone(), Arc::clone(&router));
                Ok((router, Some(url)))
            }
            (Some(MediaNode::Remote { id, .. }), None) => {
                tracing::warn!(node = %id, "media placed on a node this server has no control secret for");
                Err(Error::MediaUnavailable)
            }
            (Some(MediaNode::Embedded) | None, _) => self
                .embedded_route
                .clone()
                .map(|r| (r, None))
                .ok_or(Error::MediaUnavailable),
        }
    }

    fn route(&self, id: ParticipantId) -> Result<Arc<dyn MediaRouter>, Error> {
        self.routes()
            .get(&id)
            .map(|r| Arc::clone(&r.route))
            .ok_or(Error::MediaUnknownParticipant(id))
    }

    /// The media node at `url` stopped answering (one member's event poll
    /// found it): place the media of its rooms anew and move every member
    /// routed to it there, each once.
    fn media_lost(&self, url: &str) {
        let (Some(cluster), Some(me)) = (self.cluster.get().cloned(), self.me.upgrade()) else {
            return;
        };
        cluster.media_node_lost(url);
        // Taken off the node now, so a later report about it moves nobody twice.
        let moving: Vec<(ParticipantId, Routed)> = {
            let mut routes = self.routes();
            routes
                .iter_mut()
                .filter(|(_, r)| r.node.as_deref() == Some(url))
                .map(|(id, r)| {
                    r.node = None;
                    (*id, r.clone())
                })
                .collect()
        };
        for (member, routed) in moving {
            tokio::spawn(Self::move_member(
                Arc::clone(&cluster),
                Arc::clone(&me),
                member,
                routed,
            ));
        }
    }

    /// Moves `member` off its lost node to wherever the room's media is
    /// placed now, and tells it `media_moved`.
    async fn move_member(
        cluster: Arc<Cluster>,
        me: Arc<Self>,
        member: ParticipantId,
        routed: Routed,
    ) {
        let Routed {
            route: old,
            room,
            sink,
            ..
        } = routed;
        // First off the old node's router: the room may be placed on a node
        // at the same address again (restarted under a new id).
        old.remove_participant(member);
        let moved = match cluster.place_media(room.as_str()).await {
            Ok(()) => me.route_for(&room).and_then(|(route, node)| {
                route.add_participant(&room, member, sink.clone())?;
                Ok((route, node))
            }),
            Err(e) => {
                tracing::warn!(%room, error = %e, "cannot place the room's media anew");
                Err(Error::MediaUnavailable)
            }
        };
        match moved {
            Ok((route, node)) => {
                let still_here = match me.routes().get_mut(&member) {
                    Some(r) => {
                        r.route = Arc::clone(&route);
                        r.node = node;
                        true
                    }
                    None => false,
                };
                if !still_here {
                    route.remove_participant(member); // it left meanwhile
                } else if sink.send(ServerMessage::MediaMoved).is_ok() {
                    tracing::info!(participant = %member, %room, "media moved to another node");
                }
            }
            Err(e) => {
                // No node takes the room now: the member joins again later
                // (its client backs off), when one may.
                let _ = sink.send(ServerMessage::error(
                    ErrorCode::MediaClosed,
                    format!("the room's media node is gone and no other takes it: {e}"),
                ));
                sink.media_moved();
            }
        }
    }
}

impl MediaRouter for ClusterMedia {
    fn add_participant(
        &self,
        room: &RoomId,
        id: ParticipantId,
        sink: MediaSink,
    ) -> Result<(), Error> {
        let (route, node) = self.route_for(room)?;
        route.add_participant(room, id, sink.clone())?;
        self.routes().insert(
            id,
            Routed {
                route,
                node,
                room: room.clone(),
                sink,
            },
        );
        Ok(())
    }

    fn handle_offer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.route(id)?.handle_offer(id, sdp)
    }

    fn handle_answer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.route(id)?.handle_answer(id, sdp)
    }

    fn add_ice_candidate(&self, id: ParticipantId, candidate: IceCandidate) -> Result<(), Error> {
        self.route(id)?.add_ice_candidate(id, candidate)
    }

    fn remove_participant(&self, id: ParticipantId) {
        let routed = self.routes().remove(&id);
        if let Some(r) = routed {
            r.route.remove_participant(id);
        }
    }

    fn metrics_text(&self) -> String {
        self.embedded_route
            .as_ref()
            .map_or_else(String::new, |r| r.metrics_text())
    }
}
