//! Rooms and membership as plain data: joins, leaves and relay decisions
//! return the messages to deliver; the server only delivers them.

use std::collections::{BTreeMap, HashMap};

use hush_proto::{
    DisplayName, JoinToken, Member, Opaque, PROTOCOL_VERSION, ParticipantId, RoomId, ServerMessage,
    ServerSecret,
};

use crate::error::Error;
use crate::limits::Limits;

/// One message for one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The addressee.
    pub to: ParticipantId,
    /// What to send it.
    pub message: ServerMessage,
}

/// The outcome of a successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The newcomer's id.
    pub id: ParticipantId,
    /// The `joined` message for the newcomer.
    pub joined: ServerMessage,
    /// `member_joined` for every member already there.
    pub announcements: Vec<Delivery>,
    /// The member of the same name this join replaced (one live connection
    /// per room and name), whose connection the server closes; its
    /// `member_left` deliveries come first in `announcements`.
    pub replaced: Option<ParticipantId>,
}

/// A join request's fields, as the client sent them.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Protocol version.
    pub protocol: u32,
    /// Room to join.
    pub room: RoomId,
    /// Display name.
    pub name: DisplayName,
    /// Join token (its Debug is redacted).
    pub token: JoinToken,
    /// e2ee key package.
    pub key_package: Opaque,
}

/// Checks a join's protocol version and token at Unix time `now`.
pub fn authorize(secret: &ServerSecret, request: &JoinRequest, now: u64) -> Result<(), Error> {
    if request.protocol != PROTOCOL_VERSION {
        return Err(Error::UnsupportedProtocol {
            got: request.protocol,
            supported: PROTOCOL_VERSION,
        });
    }
    JoinToken::verify(
        secret,
        request.token.as_str(),
        &request.room,
        &request.name,
        now,
    )?;
    Ok(())
}

/// Every room on the server and who is in it.
#[derive(Debug)]
pub struct Rooms {
    max_rooms: usize,
    max_room_participants: usize,
    max_key_package_bytes: usize,
    max_envelope_bytes: usize,
    rooms: HashMap<RoomId, Room>,
    room_of: HashMap<ParticipantId, RoomId>,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Room {
    // Ids grow, so this is join order.
    members: BTreeMap<ParticipantId, Member>,
}

impl Rooms {
    /// An empty room table under `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_rooms: limits.max_rooms,
            max_room_participants: limits.max_room_participants,
            max_key_package_bytes: limits.max_key_package_bytes,
            max_envelope_bytes: limits.max_envelope_bytes,
            rooms: HashMap::new(),
            room_of: HashMap::new(),
            next_id: 1,
        }
    }

    /// Admits an authorized participant to `room`, creating the room if
    /// needed. A member already there under the same name leaves first
    /// ([`Admission::replaced`]): the others see it leave, then the
    /// newcomer join.
    pub fn join(
        &mut self,
        room: RoomId,
        name: DisplayName,
        key_package: Opaque,
    ) -> Result<Admission, Error> {
        // Every later member is sent this package: bound it like an envelope.
        if key_package.as_bytes().len() > self.max_key_package_bytes {
            return Err(Error::KeyPackageTooLarge {
                len: key_package.as_bytes().len(),
                max: self.max_key_package_bytes,
            });
        }
        let replaced = self.member_named(&room, &name);
        let mut announcements = match replaced {
            Some(old) => self.leave(old),
            None => Vec::new(),
        };
        match self.rooms.get(&room) {
            Some(r) if r.members.len() >= self.max_room_participants => {
                return Err(Error::RoomFull {
                    max: self.max_room_participants,
                });
            }
            None if self.rooms.len() >= self.max_rooms => {
                return Err(Error::ServerFull {
                    max: self.max_rooms,
                });
            }
            _ => {}
        }
        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        let member = Member {
            id,
            name,
            key_package,
        };
        let entry = self.rooms.entry(room.clone()).or_default();
        announcements.extend(entry.members.keys().map(|&to| Delivery {
            to,
            message: ServerMessage::MemberJoined {
                member: member.clone(),
            },
        }));
        let joined = ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            room: room.clone(),
            you: id,
            members: entry.members.values().cloned().collect(),
        };
        entry.members.insert(id, member);
        self.room_of.insert(id, room);
        Ok(Admission {
            id,
            joined,
            announcements,
            replaced,
        })
    }

    /// The member of `room` called `name`, if there is one: a join under
    /// the same name replaces it (one live connection per room and name).
    pub fn member_named(&self, room: &RoomId, name: &DisplayName) -> Option<ParticipantId> {
        self.rooms
            .get(room)?
            .members
            .values()
            .find(|m| m.name == *name)
            .map(|m| m.id)
    }

    /// Removes `id` from its room (dropping the room when it empties) and
    /// returns the `member_left` announcements; nothing if it was not in one.
    pub fn leave(&mut self, id: ParticipantId) -> Vec<Delivery> {
        let Some(room_id) = self.room_of.remove(&id) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return Vec::new();
        };
        room.members.remove(&id);
        if room.members.is_empty() {
            self.rooms.remove(&room_id);
            return Vec::new();
        }
        room.members
            .keys()
            .map(|&to| Delivery {
                to,
                message: ServerMessage::MemberLeft { id },
            })
            .collect()
    }

    /// Decides an envelope from `from` to `to`: delivered only within one room,
    /// with the server's idea of `from`.
    pub fn relay_envelope(
        &self,
        from: ParticipantId,
        to: ParticipantId,
        payload: Opaque,
    ) -> Result<Delivery, Error> {
        let room = self.room_of.get(&from).ok_or(Error::NotJoined(from))?;
        if self.room_of.get(&to) != Some(room) {
            return Err(Error::UnknownRecipient(to));
        }
        // Key envelopes are small; a large one only fills the addressee's queue.
        if payload.as_bytes().len() > self.max_envelope_bytes {
            return Err(Error::EnvelopeTooLarge {
                len: payload.as_bytes().len(),
                max: self.max_envelope_bytes,
            });
        }
        Ok(Delivery {
            to,
            message: ServerMessage::Envelope { from, to, payload },
        })
    }

    /// The room `id` is in.
    pub fn room_of(&self, id: ParticipantId) -> Option<&RoomId> {
        self.room_of.get(&id)
    }

    /// Number of rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.room_of.len()
    }

    /// Every room with its number of members (for the cluster's heartbeat).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.rooms
            .iter()
            .map(|(id, room)| (id.as_str().to_owned(), room.members.len()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rooms(max_rooms: usize, per_room: usize) -> Rooms {
        Rooms::new(&Limits {
            max_rooms,
            max_room_participants: per_room,
            ..Limits::default()
        })
    }

    fn join(r: &mut Rooms, room: &str, name: &str) -> Result<Admission, Error> {
        r.join(
            room.parse().unwrap(),
            name.parse().unwrap(),
            Opaque(name.as_bytes().to_vec()),
        )
    }

    #[test]
    fn a_join_under_a_taken_name_replaces_that_member_in_its_room_only() {
        // A full room and a full server: the replacement still fits.
        let mut r = rooms(2, 2);
        let ann = join(&mut r, "a", "Ann").unwrap();
        let bob = join(&mut r, "a", "Bob").unwrap();
        let other = join(&mut r, "b", "Ann").unwrap();
        assert_eq!(other.replaced, None, "another room's Ann is someone else");
        let again = join(&mut r, "a", "Ann").unwrap();
        assert_eq!(again.replaced, Some(ann.id));
        assert_eq!(
            again.announcements,
            vec![
                Delivery {
                    to: bob.id,
                    message: ServerMessage::MemberLeft { id: ann.id },
                },
                Delivery {
                    to: bob.id,
                    message: ServerMessage::MemberJoined {
                        member: Member {
                            id: again.id,
                            name: "Ann".parse().unwrap(),
                            key_package: Opaque(b"Ann".to_vec()),
                        },
                    },
                },
            ]
        );
        assert!(
            matches!(&again.joined, ServerMessage::Joined { members, .. } if members.len() == 1 && members[0].id == bob.id)
        );
        assert_eq!(r.participant_count(), 3);
        // The only member, replaced: its room is dropped and made again.
        let cy = join(&mut r, "b", "Ann").unwrap();
        assert_eq!(cy.replaced, Some(other.id));
        assert!(cy.announcements.is_empty());
        assert_eq!(r.room_count(), 2);
    }

    #[test]
    fn oversized_key_packages_and_envelopes_are_refused_before_anyone_gets_them() {
        let mut r = Rooms::new(&Limits {
            max_key_package_bytes: 8,
            max_envelope_bytes: 16,
            ..Limits::default()
        });
        let too_big = r.join(
            "x".parse().unwrap(),
            "Eve".parse().unwrap(),
            Opaque(vec![0; 9]),
        );
        assert_eq!(
            too_big.err(),
            Some(Error::KeyPackageTooLarge { len: 9, max: 8 })
        );
        assert_eq!(r.participant_count(), 0);
        let a = join(&mut r, "x", "Ann").unwrap();
        let b = join(&mut r, "x", "Bob").unwrap();
        assert_eq!(
            r.relay_envelope(a.id, b.id, Opaque(vec![0; 17])).err(),
            Some(Error::EnvelopeTooLarge { len: 17, max: 16 })
        );
        assert!(r.relay_envelope(a.id, b.id, Opaque(vec![0; 16])).is_ok());
    }

    #[test]
    fn members_see_each_other_and_leaves() {
        let mut r = rooms(10, 10);
        let a = join(&mut r, "x", "Ann").unwrap();
        assert!(a.announcements.is_empty());
        let b = join(&mut r, "x", "Bob").unwrap();
        let ServerMessage::Joined { members, you, .. } = &b.joined else {
            panic!("not joined: {:?}", b.joined);
        };
        assert_eq!(*you, b.id);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].id, a.id);
        assert_eq!(members[0].key_package, Opaque(b"Ann".to_vec()));
        assert_eq!(b.announcements.len(), 1);
        assert_eq!(b.announcements[0].to, a.id);
        let left = r.leave(a.id);
        assert_eq!(
            left,
            vec![Delivery {
                to: b.id,
                message: ServerMessage::MemberLeft { id: a.id }
            }]
        );
        assert!(r.leave(a.id).is_empty(), "leaving twice announces nothing");
        assert!(r.leave(b.id).is_empty());
        assert_eq!((r.room_count(), r.participant_count()), (0, 0));
    }

    #[test]
    fn envelopes_stay_in_their_room() {
        let mut r = rooms(10, 10);
        let a = join(&mut r, "x", "Ann").unwrap().id;
        let b = join(&mut r, "x", "Bob").unwrap().id;
        let c = join(&mut r, "y", "Cy").unwrap().id;
        let d = r.relay_envelope(a, b, Opaque(vec![1])).unwrap();
        assert_eq!(d.to, b);
        assert_eq!(
            d.message,
            ServerMessage::Envelope {
                from: a,
                to: b,
                payload: Opaque(vec![1])
            }
        );
        assert_eq!(
            r.relay_envelope(a, c, Opaque(vec![])),
            Err(Error::UnknownRecipient(c))
        );
        assert_eq!(
            r.relay_envelope(a, ParticipantId(999), Opaque(vec![])),
            Err(Error::UnknownRecipient(ParticipantId(999)))
        );
        r.leave(b);
        assert_eq!(
            r.relay_envelope(a, b, Opaque(vec![])),
            Err(Error::UnknownRecipient(b))
        );
        assert_eq!(
            r.relay_envelope(b, a, Opaque(vec![])),
            Err(Error::NotJoined(b))
        );
    }

    #[test]
    fn room_and_server_limits() {
        let mut r = rooms(1, 2);
        join(&mut r, "x", "A").unwrap();
        let b = join(&mut r, "x", "B").unwrap().id;
        assert_eq!(
            join(&mut r, "x", "C").unwrap_err(),
            Error::RoomFull { max: 2 }
        );
        assert_eq!(
            join(&mut r, "y", "C").unwrap_err(),
            Error::ServerFull { max: 1 }
        );
        r.leave(b);
        assert!(join(&mut r, "x", "C").is_ok());
    }

    #[test]
    fn authorize_checks_version_then_token() {
        let secret = ServerSecret::new(vec![3; 32]).unwrap();
        let room: RoomId = "x".parse().unwrap();
        let name: DisplayName = "Ann".parse().unwrap();
        let token = JoinToken::mint(&secret, &room, &name, 1000);
        let mut req = JoinRequest {
            protocol: PROTOCOL_VERSION,
            room,
            name,
            token,
            key_package: Opaque::default(),
        };
        assert_eq!(authorize(&secret, &req, 10), Ok(()));
        assert_eq!(
            authorize(&secret, &req, 1000),
            Err(Error::Protocol(hush_proto::Error::TokenExpired {
                expired_at: 1000
            }))
        );
        req.protocol = 2;
        assert!(matches!(
            authorize(&secret, &req, 10),
            Err(Error::UnsupportedProtocol { got: 2, .. })
        ));
    }
}
