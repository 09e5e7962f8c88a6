//! Who may open a connection: a cap on open connections in all and per
//! source address, decided at TCP accept, before a byte is read. Plain
//! data, testable without a socket; the accept loop holds a [`ConnectionSlot`] for
//! each connection it lets in, and the slot frees itself when the last
//! holder (the HTTP phase, then the WebSocket) lets go.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The server has its maximum number of open connections.
    ServerFull,
    /// This source address has its maximum number of open connections.
    AddressFull,
}

impl ConnectionRefusal {
    /// The `/metrics` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerFull => "server_full",
            Self::AddressFull => "address_full",
        }
    }
}

/// The open connections, counted in all and per source address.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping the last clone frees its place.
#[derive(Debug, Clone)]
pub struct ConnectionSlot {
    /// Held for its `Drop`, which frees the place.
    _held: Arc<SlotInner>,
}

#[derive(Debug)]
struct SlotInner {
    admission: Arc<ConnectionCaps>,
    address: IpAddr,
}

impl ConnectionCaps {
    /// At most `max_total` connections, `max_per_address` from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            open: Mutex::new(Counts::default()),
        })
    }

    /// Lets a connection from `address` in, or says why not.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionSlot, ConnectionRefusal> {
        self.admit_from(address, true)
    }

    /// Admits a connection from another node of the cluster, which
    /// relays many clients: counted, but only against the total cap.
    pub fn admit_node(
        self: &Arc<Self>,
        address: IpAddr,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        self.admit_from(address, false)
    }

    fn admit_from(
        self: &Arc<Self>,
        address: IpAddr,
        per_address_cap: bool,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        let mut open = self.counts();
        if open.total >= self.max_total {
            return Err(ConnectionRefusal::ServerFull);
        }
        let from = open.by_address.entry(address).or_default();
        if per_address_cap && *from >= self.max_per_address {
            return Err(ConnectionRefusal::AddressFull);
        }
        *from += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            _held: Arc::new(SlotInner {
                admission: Arc::clone(self),
                address,
            }),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().total
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Every method leaves the counts consistent before it can panic.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut open = self.admission.counts();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn caps_hold_in_all_and_per_address_and_places_come_back() {
        let a = ConnectionCaps::new(3, 2);
        let s1 = a.admit(ip(1)).expect("first");
        let s2 = a.admit(ip(1)).expect("second from the same address");
        assert_eq!(a.admit(ip(1)).err(), Some(ConnectionRefusal::AddressFull));
        let s3 = a.admit(ip(2)).expect("another address");
        assert_eq!(a.admit(ip(3)).err(), Some(ConnectionRefusal::ServerFull));
        assert_eq!(a.open(), 3);
        // A slot held twice (HTTP phase, then WebSocket) frees once, at the end.
        let s1b = s1.clone();
        drop(s1);
        assert_eq!(a.open(), 3);
        drop(s1b);
        assert_eq!(a.open(), 2);
        let s4 = a.admit(ip(1)).expect("a place came back");
        drop((s2, s3));
        assert_eq!(a.open(), 1);
        drop(s4);
        assert_eq!(a.open(), 0);
        assert_eq!(a.admit(ip(3)).err(), None, "every place is free again");
    }

    #[test]
    fn a_cluster_node_is_held_to_the_total_cap_only() {
        let a = ConnectionCaps::new(3, 1);
        let s1 = a.admit(ip(9)).expect("a client");
        assert_eq!(a.admit(ip(9)).err(), Some(ConnectionRefusal::AddressFull));
        let n1 = a
            .admit_node(ip(9))
            .expect("a node past the per-address cap");
        let n2 = a.admit_node(ip(9)).expect("and again");
        assert_eq!(
            a.admit_node(ip(9)).err(),
            Some(ConnectionRefusal::ServerFull)
        );
        drop((s1, n1, n2));
        assert_eq!(a.open(), 0);
        assert!(a.admit(ip(9)).is_ok(), "its places came back");
    }
}
