//! The media of a cluster node (`hush-server --redis`): each room's media
//! goes where the cluster placed it ([`Cluster::media_of`]), to this
//! node's embedded SFU or to a standalone `hush-sfu` node driven through
//! its control API ([`RemoteSfu`]). A member's requests follow the route
//! chosen when it was added.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use hush_proto::{IceCandidate, ParticipantId, RoomId, ServerSecret};

use crate::cluster::{Cluster, MediaNode};
use crate::embedded::EmbeddedSfu;
use crate::error::Error;
use crate::media::{MediaRouter, MediaSink};
use crate::remote::{RemoteNode, RemoteSfu};

/// [`MediaRouter`] of a cluster node: per room, embedded or a media node.
pub struct ClusterMedia {
    embedded: Option<hush_sfu::Sfu>,
    control_secret: Option<ServerSecret>,
    cluster: OnceLock<Arc<Cluster>>,
    /// One router per media node, by control URL.
    remotes: Mutex<HashMap<String, Arc<RemoteSfu>>>,
    /// Where each member's media went.
    routes: Mutex<HashMap<ParticipantId, Arc<dyn MediaRouter>>>,
    /// The embedded SFU's router.
    embedded_route: Option<Arc<dyn MediaRouter>>,
}

impl core::fmt::Debug for ClusterMedia {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClusterMedia")
            .field("embedded", &self.embedded.is_some())
            .field("remote", &self.control_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl ClusterMedia {
    /// A node's media: its embedded SFU (if it has one) and, with the
    /// media nodes' control secret, the cluster's standalone nodes.
    pub fn new(embedded: Option<hush_sfu::Sfu>, control_secret: Option<ServerSecret>) -> Self {
        let embedded_route: Option<Arc<dyn MediaRouter>> = embedded
            .as_ref()
            .map(|sfu| Arc::new(EmbeddedSfu::new(sfu.clone())) as Arc<dyn MediaRouter>);
        Self {
            embedded,
            control_secret,
            cluster: OnceLock::new(),
            remotes: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            embedded_route,
        }
    }

    /// Starts following the cluster's media placements (once; later calls
    /// change nothing). Before it, every room's media is embedded.
    pub fn attach(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The embedded SFU, if this node has one (e.g. for shutdown).
    pub fn embedded_sfu(&self) -> Option<&hush_sfu::Sfu> {
        self.embedded.as_ref()
    }

    fn route_for(&self, room: &RoomId) -> Result<Arc<dyn MediaRouter>, Error> {
        let placed = self.cluster.get().and_then(|c| c.media_of(room.as_str()));
        match (placed, &self.control_secret) {
            (Some(MediaNode::Remote { id, url }), Some(secret)) => {
                let mut remotes = self.remotes.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(r) = remotes.get(&url) {
                    return Ok(Arc::clone(r) as Arc<dyn MediaRouter>);
                }
                let node = RemoteNode::new(&url, secret.clone()).map_err(|e| {
                    tracing::warn!(node = %id, error = %e, "media node with an unusable URL");
                    Error::MediaUnavailable
                })?;
                let cluster = self.cluster.get().map(Arc::downgrade);
                let lost_url = url.clone();
                let router = Arc::new(RemoteSfu::with_on_lost(
                    node,
                    Arc::new(move || {
                        if let Some(cluster) = cluster.as_ref().and_then(std::sync::Weak::upgrade) {
                            cluster.media_node_lost(&lost_url);
                        }
                    }),
                ));
                remotes.insert(url, Arc::clone(&router));
                Ok(router)
            }
            (Some(MediaNode::Remote { id, .. }), None) => {
                tracing::warn!(node = %id, "media placed on a node this server has no control secret for");
                Err(Error::MediaUnavailable)
            }
            (Some(MediaNode::Embedded) | None, _) => {
                self.embedded_route.clone().ok_or(Error::MediaUnavailable)
            }
        }
    }

    fn route(&self, id: ParticipantId) -> Result<Arc<dyn MediaRouter>, Error> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
            .ok_or(Error::MediaUnknownParticipant(id))
    }
}

impl MediaRouter for ClusterMedia {
    fn add_participant(
        &self,
        room: &RoomId,
        id: ParticipantId,
        sink: MediaSink,
    ) -> Result<(), Error> {
        let route = self.route_for(room)?;
        route.add_participant(room, id, sink)?;
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, route);
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
        let route = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(route) = route {
            route.remove_participant(id);
        }
    }

    fn metrics_text(&self) -> String {
        self.embedded_route
            .as_ref()
            .map_or_else(String::new, |r| r.metrics_text())
    }
}
