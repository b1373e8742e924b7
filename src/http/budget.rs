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
//! The registry lives on the HTTP loop's thread (`Rc`, no locks) and does no
//! I/O: it tells a connection to go through its [`Notify`].

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::Notify;

use crate::tally::Tally;

/// Fraction of the budget (in percent) above which idle connections are
/// pushed out for new ones.
pub const PRESSURE: usize = 90;

/// A registered connection's number.
pub type ConnId = u64;

/// What the registry and a connection share: the connection says when it
/// is idle (a `Cell`, no lookup per request), the registry tells it to go.
pub struct Slot {
    pub id: ConnId,
    ip: IpAddr,
    /// Since when it waits for a request (new or kept alive); `None` while
    /// a request is being answered.
    idle_since: Cell<Option<Instant>>,
    /// Registered when; among one address's connections the newest goes.
    admitted: Instant,
    evict: Notify,
}

impl Slot {
    /// Marks the connection as waiting for a request (`Some(since)`) or as
    /// being answered (`None`).
    pub fn set_idle(&self, since: Option<Instant>) {
        self.idle_since.set(since);
    }

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

/// Every open connection, by id.
pub struct Registry {
    budget: usize,
    next: ConnId,
    conns: HashMap<ConnId, Rc<Slot>>,
    per_ip: Tally<IpAddr>,
    /// Connections pushed out so far, for the log.
    pub evicted: u64,
}

impl Registry {
    /// A registry holding at most `budget` connections.
    pub fn new(budget: usize) -> Self {
        Registry {
            budget: budget.max(1),
            next: 0,
            conns: HashMap::new(),
            per_ip: Tally::default(),
            evicted: 0,
        }
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Makes room if needed, then registers a connection from `ip`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admission {
        if self.conns.len() * 100 >= self.budget * PRESSURE {
            let idle = self
                .conns
                .iter()
                .filter_map(|(id, e)| e.idle_since.get().map(|t| (t, *id)))
                .min();
            if let Some((_, id)) = idle {
                self.evict(id);
            } else if self.conns.len() >= self.budget {
                let Some((top, held)) = self.per_ip.heaviest() else {
                    return Admission::Refused;
                };
                if top == ip || self.per_ip.get(&ip) >= held {
                    return Admission::Refused;
                }
                let newest = self
                    .conns
                    .iter()
                    .filter(|(_, e)| e.ip == top)
                    .max_by_key(|(_, e)| e.admitted)
                    .map(|(id, _)| *id);
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
        self.per_ip.add(ip);
        Admission::Admitted(slot)
    }

    /// Forgets a connection (it closed, or was pushed out).
    pub fn remove(&mut self, id: ConnId) {
        if let Some(e) = self.conns.remove(&id) {
            self.per_ip.sub(e.ip);
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
            c.set_idle(since);
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
        for i in 0..8 {
            held.push(id(r.admit(ip(1), t + Duration::from_secs(i))));
        }
        for i in 0..2 {
            held.push(id(r.admit(ip(2), t + Duration::from_secs(10 + i))));
        }
        for c in &held {
            c.set_idle(None);
        }
        // A third machine gets in at the expense of the one holding 8.
        id(r.admit(ip(3), t + Duration::from_secs(20))).set_idle(None);
        assert_eq!(r.per_ip.get(&ip(1)), 7);
        // The holder itself asking for more is refused.
        assert!(matches!(r.admit(ip(1), t), Admission::Refused));
        assert_eq!(r.len(), 10);
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
