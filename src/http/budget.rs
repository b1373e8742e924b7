//! The connection budget: how many connections the server holds, and which
//! one gives way when a new one arrives and the budget is nearly used.
//!
//! The budget comes from the descriptor limit (each download needs a socket
//! and an open file). Below [`PRESSURE`] of it every connection is welcome,
//! so a benchmark of 1,000 connections from one address is served in full.
//! Above it, each new connection first pushes out the connection that has
//! been idle longest (waiting for a request, not downloading); when none is
//! idle and the budget is full, a connection of the address holding the
//! most goes, unless the newcomer is from that address itself, in which case
//! the newcomer is refused. So one machine cannot starve the rack, and a
//! download in progress is only cut for fairness, never for an idle client.
//!
//! Each admission costs O(log n) whatever the number of connections (the
//! registry keeps indexes, not a scan), and refused connections, answered
//! `503` outside the budget, are bounded too ([`MAX_REFUSING`]).
//!
//! The registry lives on the HTTP loop's thread (`Rc`, no locks) and does no
//! I/O: it tells a connection to go through its [`Notify`].

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::Notify;
/// Fraction of the budget (in percent) above which idle connections are
/// pushed out for new ones.
pub const PRESSURE: usize = 90;

/// A registered connection's number.
pub type ConnId = u64;

/// What the registry and a connection share: the registry tells it to go.
pub struct Slot {
    pub id: ConnId,
    ip: IpAddr,
    /// Since when it waits for a request (new or kept alive); `None` while
    /// a request is being answered. Changed through [`Registry::set_idle`],
    /// which keeps its index in step.
    idle_since: Cell<Option<Instant>>,
    /// Registered when; among one address's connections the newest goes.
    admitted: Instant,
    evict: Notify,
}

impl Slot {
    /// Resolves when the connection must give way to a new one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// What became of a new connection.
pub enum Admission {
    /// Serve it; its slot says when it must give way.
    Admitted(Rc<Slot>),
    /// The budget is full of busy connections, most of them from this
    /// connection's own address: answer 503 and close.
    Refused,
}

/// Every open connection, by id, with the indexes that make each
/// admission O(log n) however full the budget is: the idle connections by
/// how long they have waited, each address's connections by age, and the
/// addresses by how many they hold.
pub struct Registry {
    budget: usize,
    next: ConnId,
    conns: HashMap<ConnId, Rc<Slot>>,
    idle: BTreeSet<(Instant, ConnId)>,
    by_ip: HashMap<IpAddr, BTreeSet<(Instant, ConnId)>>,
    weights: BTreeSet<(usize, IpAddr)>,
    /// Refused connections still being answered (`503`, then a lingering
    /// close); see [`Registry::refusing`].
    refusing: Rc<Cell<usize>>,
    /// Connections pushed out so far, for the log.
    pub evicted: u64,
}

/// At most this many refused connections are answered at once (`503` and
/// a lingering close, up to two seconds each); beyond it a refused
/// connection is closed at once. Their descriptors come out of the
/// server's reserve, so a storm of refusals cannot exhaust the descriptors
/// the budget counts on.
pub const MAX_REFUSING: usize = 64;

/// Holds a place among the refused connections being answered.
pub struct Refusing(Rc<Cell<usize>>);

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Registry {
    /// A registry holding at most `budget` connections.
    pub fn new(budget: usize) -> Self {
        Registry {
            budget: budget.max(1),
            next: 0,
            conns: HashMap::new(),
            idle: BTreeSet::new(),
            by_ip: HashMap::new(),
            weights: BTreeSet::new(),
            refusing: Rc::default(),
            evicted: 0,
        }
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// How many connections `ip` holds.
    fn held_by(&self, ip: &IpAddr) -> usize {
        self.by_ip.get(ip).map_or(0, BTreeSet::len)
    }

    /// Marks a connection as waiting for a request (`Some(since)`) or as
    /// being answered (`None`).
    pub fn set_idle(&mut self, slot: &Slot, since: Option<Instant>) {
        if let Some(old) = slot.idle_since.replace(since) {
            self.idle.remove(&(old, slot.id));
        }
        if let Some(t) = since {
            if self.conns.contains_key(&slot.id) {
                self.idle.insert((t, slot.id));
            }
        }
    }

    /// A place for answering one refused connection, if fewer than
    /// [`MAX_REFUSING`] are being answered; `None`: close it at once.
    pub fn refusing(&self) -> Option<Refusing> {
        let n = self.refusing.get();
        (n < MAX_REFUSING).then(|| {
            self.refusing.set(n + 1);
            Refusing(self.refusing.clone())
        })
    }

    /// Makes room if needed, then registers a connection from `ip`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admission {
        if self.conns.len() * 100 >= self.budget * PRESSURE {
            if let Some(&(_, id)) = self.idle.first() {
                self.evict(id);
            } else if self.conns.len() >= self.budget {
                let Some(&(held, top)) = self.weights.last() else {
                    return Admission::Refused;
                };
                if top == ip || self.held_by(&ip) >= held {
                    return Admission::Refused;
                }
                let newest = self
                    .by_ip
                    .get(&top)
                    .and_then(|c| c.last())
                    .map(|&(_, id)| id);
                if let Some(id) = newest {
                    self.evict(id);
                }
            }
        }
        let id = self.next;
        self.next += 1;
        let slot = Rc::new(Slot {
            id,
            ip,
            idle_since: Cell::new(Some(now)),
            admitted: now,
            evict: Notify::new(),
        });
        self.conns.insert(id, slot.clone());
        self.idle.insert((now, id));
        let held = self.held_by(&ip);
        self.weights.remove(&(held, ip));
        self.weights.insert((held + 1, ip));
        self.by_ip.entry(ip).or_default().insert((now, id));
        Admission::Admitted(slot)
    }

    /// Forgets a connection (it closed, or was pushed out).
    pub fn remove(&mut self, id: ConnId) {
        let Some(e) = self.conns.remove(&id) else {
            return;
        };
        if let Some(t) = e.idle_since.get() {
            self.idle.remove(&(t, id));
        }
        let held = self.held_by(&e.ip);
        self.weights.remove(&(held, e.ip));
        if held > 1 {
            self.weights.insert((held - 1, e.ip));
        }
        if let Some(c) = self.by_ip.get_mut(&e.ip) {
            c.remove(&(e.admitted, id));
            if c.is_empty() {
                self.by_ip.remove(&e.ip);
            }
        }
    }

    /// Tells a connection to close now and forgets it, so the newcomer has
    /// its place at once.
    fn evict(&mut self, id: ConnId) {
        if let Some(e) = self.conns.get(&id) {
            e.evict.notify_one();
        }
        self.remove(id);
        self.evicted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn id(a: Admission) -> Rc<Slot> {
        match a {
            Admission::Admitted(slot) => slot,
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn below_pressure_everyone_is_welcome() {
        let mut r = Registry::new(1000);
        let t = Instant::now();
        for _ in 0..899 {
            id(r.admit(ip(1), t));
        }
        assert_eq!((r.len(), r.evicted), (899, 0));
    }

    #[test]
    fn under_pressure_the_longest_idle_goes_first() {
        let mut r = Registry::new(10);
        let t = Instant::now();
        let conns: Vec<_> = (0..9)
            .map(|i| id(r.admit(ip(1), t + Duration::from_secs(i))))
            .collect();
        // All but #3 and #5 are downloading; #5 has waited longest.
        for (i, c) in conns.iter().enumerate() {
            let since = match i {
                3 => Some(t + Duration::from_secs(20)),
                5 => Some(t + Duration::from_secs(10)),
                _ => None,
            };
            r.set_idle(c, since);
        }
        id(r.admit(ip(2), t + Duration::from_secs(30)));
        assert_eq!(r.len(), 9);
        assert!(!r.conns.contains_key(&conns[5].id));
        // The evicted one was told.
        assert!(futures_ready(&conns[5].evict));
        assert!(!futures_ready(&conns[4].evict));
    }

    #[test]
    fn when_full_of_downloads_the_biggest_holder_gives_way() {
        let mut r = Registry::new(10);
        let t = Instant::now();
        let mut held = Vec::new();
        // Ten downloads (each busy from the start): eight from one machine.
        for i in 0..10 {
            let from = if i < 8 { ip(1) } else { ip(2) };
            let c = id(r.admit(from, t + Duration::from_secs(i)));
            r.set_idle(&c, None);
            held.push(c);
        }
        assert_eq!((r.len(), r.evicted), (10, 0));
        // A third machine gets in at the expense of the one holding 8: its
        // newest connection goes.
        let third = id(r.admit(ip(3), t + Duration::from_secs(20)));
        r.set_idle(&third, None);
        assert_eq!(r.held_by(&ip(1)), 7);
        assert!(!r.conns.contains_key(&held[7].id));
        assert!(futures_ready(&held[7].evict));
        assert!(!futures_ready(&held[6].evict));
        // The holder itself asking for more is refused.
        assert!(matches!(r.admit(ip(1), t), Admission::Refused));
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn the_indexes_follow_every_change() {
        let mut r = Registry::new(100);
        let t = Instant::now();
        let a = id(r.admit(ip(1), t));
        let b = id(r.admit(ip(1), t + Duration::from_secs(1)));
        let c = id(r.admit(ip(2), t + Duration::from_secs(2)));
        r.set_idle(&a, None);
        r.set_idle(&b, Some(t + Duration::from_secs(5)));
        assert_eq!(r.idle.first(), Some(&(t + Duration::from_secs(2), c.id)));
        r.remove(c.id);
        assert_eq!(r.idle.first(), Some(&(t + Duration::from_secs(5), b.id)));
        assert_eq!(r.weights.last(), Some(&(2, ip(1))));
        r.remove(a.id);
        r.remove(b.id);
        // A slot that was removed is not indexed again when it goes idle.
        r.set_idle(&b, Some(t));
        assert!(r.idle.is_empty() && r.weights.is_empty() && r.by_ip.is_empty());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn refusals_answered_at_once_are_bounded() {
        let r = Registry::new(10);
        let held: Vec<_> = (0..MAX_REFUSING).map(|_| r.refusing().unwrap()).collect();
        assert!(r.refusing().is_none());
        drop(held);
        assert!(r.refusing().is_some());
    }

    /// Whether a `notify_one` is stored (a permit waiting).
    fn futures_ready(n: &Notify) -> bool {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let fut = n.notified();
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(fut.as_mut().poll(&mut cx), Poll::Ready(()))
    }
}
