//! A simulated room: members running `Group` with real hush-sframe
//! contexts, and a relay that records every byte and delivers envelopes in
//! whatever order a test chooses.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};

use hush_e2ee::{
    Config, Error, Group, Identity, KeyEvent, LocalMember, Millis, Output, ParticipantId, RoomId,
};
use hush_sframe::{CipherSuite, KeyId, Receiver, Secret, Sender};

pub const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
pub const T0: Millis = Millis(1_800_000_000_000);

/// One participant: its key state machine and its SFrame contexts.
pub struct Client {
    pub group: Group,
    pub tx: Sender,
    pub rx: HashMap<ParticipantId, Receiver>,
    /// Every receive key this client was ever given or derived.
    pub ever_held: Vec<(ParticipantId, KeyId, Secret)>,
    pub package: Vec<u8>,
    /// Members this client saw confirmed, in order.
    pub confirmed: Vec<ParticipantId>,
    /// When its key package was made.
    pub created: Millis,
    /// When it joined, and (for a former member) left, in [`Room::events`].
    pub joined_at: u64,
    pub left_at: Option<u64>,
}

impl Client {
    fn apply(&mut self, outputs: Vec<Output>, queue: &mut Vec<Queued>) {
        let me = self.group.me();
        for o in outputs {
            match o {
                Output::Send { to, envelope } => queue.push(Queued {
                    from: me,
                    to,
                    envelope,
                }),
                Output::Key(KeyEvent::UseSendKey { kid, base_key }) => {
                    let old = self.tx.active_key();
                    self.tx
                        .add_key(kid, base_key.expose())
                        .expect("send KIDs are never reused");
                    self.tx.set_active_key(kid).expect("just added");
                    if let Some(old) = old {
                        self.tx.remove_key(old);
                    }
                }
                Output::Key(KeyEvent::InstallReceiveKey {
                    sender,
                    kid,
                    base_key,
                }) => {
                    let rx = self
                        .rx
                        .entry(sender)
                        .or_insert_with(|| Receiver::new(SUITE));
                    rx.add_key(kid, base_key.expose())
                        .expect("a KID is installed once");
                    self.ever_held.push((sender, kid, base_key));
                }
                Output::Key(KeyEvent::RemoveReceiveKey { sender, kid }) => {
                    let removed = self
                        .rx
                        .get_mut(&sender)
                        .is_some_and(|rx| rx.remove_key(kid));
                    assert!(removed, "removing a key that was never installed");
                }
                Output::Confirmed(who) => {
                    assert!(!self.confirmed.contains(&who), "confirmed twice: {who}");
                    self.confirmed.push(who);
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
}

/// An envelope on its way through the relay.
#[derive(Clone)]
pub struct Queued {
    pub from: ParticipantId,
    pub to: ParticipantId,
    pub envelope: Vec<u8>,
}

/// The room, its members, the relay queue and the clock.
pub struct Room {
    pub room: RoomId,
    pub config: Config,
    pub clients: BTreeMap<ParticipantId, Client>,
    pub queue: Vec<Queued>,
    /// Every byte the relay (signaling server) ever carried.
    pub relay_log: Vec<Vec<u8>>,
    pub now: Millis,
    /// Clients that left, kept so tests can play the removed member.
    pub former: BTreeMap<ParticipantId, Client>,
    /// Every envelope delivered so far, for tests that replay them.
    pub delivered: Vec<Queued>,
    /// Joins and departures so far.
    pub events: u64,
}

impl Room {
    pub fn new(name: &str) -> Self {
        Self {
            room: RoomId(name.into()),
            config: Config::default(),
            clients: BTreeMap::new(),
            queue: Vec::new(),
            relay_log: Vec::new(),
            now: T0,
            former: BTreeMap::new(),
            delivered: Vec::new(),
            events: 0,
        }
    }

    /// A new member joins: it gets every current member's key package, and
    /// every current member gets its package.
    pub fn join(&mut self) -> ParticipantId {
        let local = LocalMember::new(Identity::generate(), self.room.clone(), self.now)
            .expect("local member");
        self.join_with(local)
    }

    pub fn join_with(&mut self, local: LocalMember) -> ParticipantId {
        let package = local.key_package().to_bytes();
        let created = local.key_package().created;
        self.relay_log.push(package.clone());
        let packages: Vec<Vec<u8>> = self.clients.values().map(|c| c.package.clone()).collect();
        let joined = Group::join(local, &packages, self.now, self.config);
        assert!(joined.rejected.is_empty(), "{:?}", joined.rejected);
        assert_eq!(joined.accepted.len(), packages.len());
        let id = joined.group.me();
        let mut client = Client {
            group: joined.group,
            tx: Sender::new(SUITE),
            rx: HashMap::new(),
            ever_held: Vec::new(),
            package: package.clone(),
            confirmed: Vec::new(),
            created,
            joined_at: self.events,
            left_at: None,
        };
        self.events += 1;
        client.apply(joined.outputs, &mut self.queue);
        for c in self.clients.values_mut() {
            let out = c
                .group
                .member_joined(&package, self.now)
                .expect("member joined");
            c.apply(out, &mut self.queue);
        }
        self.clients.insert(id, client);
        id
    }

    /// A member leaves (or is removed); everyone else is told.
    pub fn leave(&mut self, id: ParticipantId) {
        let mut client = self.clients.remove(&id).expect("a member");
        client.left_at = Some(self.events);
        self.events += 1;
        self.former.insert(id, client);
        for c in self.clients.values_mut() {
            let out = c.group.member_left(id, self.now).expect("member left");
            c.apply(out, &mut self.queue);
        }
        // The relay drops what was queued for the departed member.
        self.queue.retain(|q| q.to != id);
    }

    /// Delivers the queued envelope at `index`.
    pub fn deliver_one(&mut self, index: usize) {
        let q = self.queue.remove(index);
        self.relay_log.push(q.envelope.clone());
        self.delivered.push(q.clone());
        let Some(c) = self.clients.get_mut(&q.to) else {
            return;
        };
        match c.group.receive_envelope(&q.envelope, self.now) {
            Ok(out) => c.apply(out, &mut self.queue),
            // Envelopes from members who left meanwhile are refused; fine.
            Err(Error::UnknownMember(from)) if !self.clients.contains_key(&from) => {}
            Err(e) => panic!("envelope {} -> {} refused: {e}", q.from, q.to),
        }
    }

    /// Delivers what is queued now for `to` (not what that makes others send).
    pub fn deliver_to(&mut self, to: ParticipantId) {
        let mut i = 0;
        let mut n = self.queue.iter().filter(|q| q.to == to).count();
        while n > 0 {
            if self.queue[i].to == to {
                self.deliver_one(i);
                n -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Delivers everything, in queue order, until the relay is empty.
    pub fn deliver_all(&mut self) {
        while !self.queue.is_empty() {
            self.deliver_one(0);
        }
    }

    /// Moves the clock and fires every member's timers.
    pub fn advance(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
        for c in self.clients.values_mut() {
            let out = c.group.handle_timeout(self.now);
            c.apply(out, &mut self.queue);
        }
    }

    /// `from` seals a media frame with its current send key.
    pub fn seal(&mut self, from: ParticipantId, payload: &[u8]) -> Vec<u8> {
        self.clients
            .get_mut(&from)
            .expect("member")
            .tx
            .encrypt(b"", payload)
            .expect("has a send key")
    }

    /// `at` opens a frame from `from` as a client does (PROTOCOL.md §5.3):
    /// under an installed key, or, for an unknown KID, under a candidate
    /// key that is installed only if the frame authenticates under it.
    pub fn open(
        &mut self,
        at: ParticipantId,
        from: ParticipantId,
        frame: &[u8],
    ) -> Result<Vec<u8>, String> {
        let now = self.now;
        let c = self.clients.get_mut(&at).expect("member");
        let rx = c.rx.entry(from).or_insert_with(|| Receiver::new(SUITE));
        match rx.decrypt(b"", frame) {
            Ok(pt) => Ok(pt),
            Err(hush_sframe::Error::UnknownKeyId(kid)) => {
                let candidate = c
                    .group
                    .candidate_receive_key(from, kid)
                    .map_err(|e| e.to_string())?;
                let mut trial = Receiver::new(SUITE);
                trial
                    .add_key(kid, candidate.base.expose())
                    .expect("fresh receiver");
                let opened = trial.decrypt(b"", frame).map_err(|e| e.to_string())?;
                let out = c
                    .group
                    .derive_receive_key(from, kid, now)
                    .map_err(|e| e.to_string())?;
                let mut q = Vec::new();
                c.apply(out, &mut q);
                assert!(q.is_empty());
                // The installed key opens it too (the trial's replay
                // window is thrown away with the trial context).
                let again =
                    c.rx.get_mut(&from)
                        .expect("created above")
                        .decrypt(b"", frame)
                        .map_err(|e| e.to_string())?;
                assert_eq!(again, opened);
                Ok(opened)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `at` holds `from` as a confirmed member.
    pub fn confirmed(&self, at: ParticipantId, from: ParticipantId) -> bool {
        self.clients[&at].group.is_confirmed(from)
    }

    pub fn ids(&self) -> Vec<ParticipantId> {
        self.clients.keys().copied().collect()
    }
}

/// Whether `former` can open `frame` with what it knows: any key it ever
/// held for `from`, ratcheted up to `steps` times within its generation,
/// each also ratcheted once more under the frame's own generation label,
/// each tried under the frame's KID (as an attacker who knows the algorithm).
pub fn any_held_key_opens(former: &Client, from: ParticipantId, frame: &[u8], steps: u16) -> bool {
    let Ok((header, _)) = hush_sframe::Header::parse(frame) else {
        return false;
    };
    let target = hush_e2ee::split_kid(header.kid).map(|(_, g)| g);
    let opens = |key: &Secret| {
        let mut rx = Receiver::new(SUITE);
        rx.add_key(header.kid, key.expose())
            .expect("fresh receiver");
        rx.decrypt(b"", frame).is_ok()
    };
    for (sender, kid, key) in &former.ever_held {
        if *sender != from {
            continue;
        }
        let Some((_, generation)) = hush_e2ee::split_kid(*kid) else {
            continue;
        };
        let mut base = key.clone();
        for step in 0..=steps {
            if step > 0 {
                let g = hush_e2ee::Generation {
                    rekey: generation.rekey,
                    ratchet: generation.ratchet.saturating_add(step),
                };
                base = hush_e2ee::ratchet(&base, g);
            }
            if opens(&base) || target.is_some_and(|t| opens(&hush_e2ee::ratchet(&base, t))) {
                return true;
            }
        }
    }
    false
}
