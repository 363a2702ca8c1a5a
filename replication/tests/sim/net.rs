//! The simulated network: one connection per pair of servers, as the TCP transport keeps, with the link
//! semantics of TCP: FIFO on a connection, and a lost message breaks the connection, which both ends learn of
//! (`Disconnected`); a broken connection is re-made after a delay (`Connected` at both ends at once), unless a
//! partition cuts the pair off. Every message goes through the real wire format (`Message::encode`/`decode`).
//! Delays are drawn per message from the seed, so messages on different links interleave in any order.
//!
//! Deliveries sit in one queue ordered by (time, sequence); one task sleeps until the next is due on the paused
//! tokio clock and hands it to the receiver's inbound channel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replication::message::{Message, ServerId};
use replication::transport::{Inbound, InboundReceiver, InboundSender, MessageStream, SendError, Transport};
use tokio::sync::Notify;
use tokio::time::Instant;
use wal::fs::SimFs;

/// How the network misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct NetFaults {
    /// Chance that a message is lost (which breaks its connection).
    pub loss: f64,
    /// Longest delay of one message.
    pub max_delay: Duration,
    /// Chance that a follower's disk loses power the moment its ACK of NEWLEADER reaches the leader (and, half
    /// the time, that the leader is cut off then too): the window in which ZooKeeper lost committed txns
    /// (ZOOKEEPER-4646, -4785), when a follower acknowledged a history it had not made durable.
    pub cut_after_ack_newleader: f64,
}

/// A pair of servers, lower id first.
type Pair = (ServerId, ServerId);

fn pair(a: ServerId, b: ServerId) -> Pair {
    (a.min(b), a.max(b))
}

/// The state of a pair's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    /// Up, in this generation (a message of an older one is lost with it).
    Up(u64),
    /// Down; a reconnect is scheduled.
    Down,
}

enum Delivery {
    Message { from: ServerId, to: ServerId, generation: u64, frame: Bytes, lost: bool },
    Connect(Pair),
}

struct State {
    rng: StdRng,
    faults: NetFaults,
    /// The live incarnation of each server that is up, its inbound channel, and its disk.
    ends: BTreeMap<ServerId, (u64, InboundSender, SimFs)>,
    conns: BTreeMap<Pair, Conn>,
    /// When the last message scheduled on each direction arrives (FIFO per connection).
    last_arrival: BTreeMap<(ServerId, ServerId), Instant>,
    isolated: BTreeSet<ServerId>,
    queue: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    next_generation: u64,
    /// Messages delivered, for the statistics.
    pub delivered: u64,
    /// Power cuts after an ACK of NEWLEADER.
    pub ack_cuts: u64,
}

/// The network, shared by every server's transport and the simulation.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl Net {
    pub fn new(seed: u64, faults: NetFaults) -> Net {
        let state = State {
            rng: StdRng::seed_from_u64(seed ^ 0x006e_6574_776f_726b),
            faults,
            ends: BTreeMap::new(),
            conns: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            isolated: BTreeSet::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_generation: 0,
            delivered: 0,
            ack_cuts: 0,
        };
        let net = Net { state: Arc::new(Mutex::new(state)), wake: Arc::new(Notify::new()) };
        tokio::spawn(net.clone().deliver_forever());
        net
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set_faults(&self, faults: NetFaults) {
        self.state().faults = faults;
    }

    pub fn delivered(&self) -> u64 {
        self.state().delivered
    }

    pub fn ack_cuts(&self) -> u64 {
        self.state().ack_cuts
    }

    /// Plugs in incarnation `incarnation` of server `me`: its transport and inbound channel. It connects to every
    /// server up and not cut off, after a short delay.
    pub fn plug(&self, me: ServerId, incarnation: u64, disk: SimFs) -> (SimTransport, InboundReceiver) {
        let (tx, rx) = InboundReceiver::channel();
        let mut state = self.state();
        state.ends.insert(me, (incarnation, tx, disk));
        let others: Vec<ServerId> = state.ends.keys().copied().filter(|&o| o != me).collect();
        for other in others {
            state.conns.insert(pair(me, other), Conn::Down);
            state.schedule_connect(pair(me, other), Duration::from_millis(1), Duration::from_millis(30));
        }
        drop(state);
        self.wake.notify_one();
        (SimTransport { me, incarnation, net: self.clone() }, rx)
    }

    /// Unplugs server `me` (it crashed): its connections break, and the others learn of it.
    pub fn unplug(&self, me: ServerId) {
        let mut state = self.state();
        state.ends.remove(&me);
        let pairs: Vec<Pair> = state.conns.keys().copied().filter(|&(a, b)| a == me || b == me).collect();
        for p in pairs {
            state.break_conn(p);
            state.conns.remove(&p);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Cuts `id` off from everyone (its connections break, and their reconnects are queued) until
    /// [`Net::heal`].
    pub fn isolate(&self, id: ServerId) {
        self.state().isolate(id);
        // The delivery task may be waiting on an empty queue: the reconnects must wake it, or no connection
        // is ever made again (found by the soak: seed 5342 of an earlier version).
        self.wake.notify_one();
    }

    /// Ends every partition.
    pub fn heal(&self) {
        self.state().isolated.clear();
    }

    pub fn isolated(&self) -> BTreeSet<ServerId> {
        self.state().isolated.clone()
    }

    /// Whether nothing is in flight (connections apart).
    pub fn quiet(&self) -> bool {
        self.state().queue.values().all(|d| matches!(d, Delivery::Connect(_)))
    }

    async fn deliver_forever(self) {
        loop {
            let next = self.state().queue.keys().next().map(|&(at, _)| at);
            match next {
                Some(at) if at <= Instant::now() => self.deliver_due(),
                Some(at) => {
                    tokio::select! {
                        biased;
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    fn deliver_due(&self) {
        let mut state = self.state();
        let now = Instant::now();
        while let Some(entry) = state.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let delivery = entry.remove();
            state.deliver(delivery);
        }
    }
}

impl State {
    fn isolate(&mut self, id: ServerId) {
        self.isolated.insert(id);
        let pairs: Vec<Pair> = self.conns.keys().copied().filter(|&(a, b)| a == id || b == id).collect();
        for p in pairs {
            self.break_conn(p);
        }
    }

    fn up(&self, id: ServerId) -> bool {
        self.ends.contains_key(&id)
    }

    fn push(&mut self, at: Instant, delivery: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), delivery);
    }

    fn schedule_connect(&mut self, p: Pair, min: Duration, max: Duration) {
        let delay = self.rng.gen_range(min..=max);
        self.push(Instant::now() + delay, Delivery::Connect(p));
    }

    fn report(&self, to: ServerId, inbound: Inbound) {
        if let Some((_, tx, _)) = self.ends.get(&to) {
            tx.send(inbound);
        }
    }

    /// Breaks the connection of `p` if it is up: both ends learn of it; it is re-made later.
    fn break_conn(&mut self, p: Pair) {
        if let Some(Conn::Up(_)) = self.conns.get(&p) {
            self.conns.insert(p, Conn::Down);
            self.report(p.0, Inbound::Disconnected(p.1));
            self.report(p.1, Inbound::Disconnected(p.0));
            self.schedule_connect(p, Duration::from_millis(20), Duration::from_millis(200));
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Connect(p) => {
                if !self.up(p.0) || !self.up(p.1) || self.conns.get(&p) != Some(&Conn::Down) {
                    return;
                }
                if self.isolated.contains(&p.0) || self.isolated.contains(&p.1) {
                    // Refused for now: the dialer tries again.
                    self.schedule_connect(p, Duration::from_millis(50), Duration::from_millis(300));
                    return;
                }
                self.next_generation += 1;
                self.conns.insert(p, Conn::Up(self.next_generation));
                self.report(p.0, Inbound::Connected(p.1));
                self.report(p.1, Inbound::Connected(p.0));
            }
            Delivery::Message { from, to, generation, frame, lost } => {
                if self.conns.get(&pair(from, to)) != Some(&Conn::Up(generation)) {
                    return;
                }
                if lost {
                    // The receiver sees a gap in the stream (or the sender a reset): the connection breaks.
                    self.break_conn(pair(from, to));
                    return;
                }
                let message = Message::decode(frame).expect("what the real encoder wrote decodes");
                self.delivered += 1;
                let acked_newleader = matches!(message, Message::AckNewLeader { .. });
                self.report(to, Inbound::Message(from, message));
                if acked_newleader && self.rng.gen_bool(self.faults.cut_after_ack_newleader) {
                    // The simulation takes the follower down when it sees its disk off.
                    let seed = self.rng.gen();
                    if let Some((_, _, disk)) = self.ends.get(&from) {
                        drop(disk.crash_now(seed));
                        self.ack_cuts += 1;
                    }
                    if self.rng.gen_bool(0.5) {
                        self.isolate(to);
                    }
                }
            }
        }
    }

    /// Queues `message` on the connection from `from` to `to`, if it is up.
    fn send(&mut self, from: ServerId, to: ServerId, message: &Message) -> Result<(), SendError> {
        let Some(&Conn::Up(generation)) = self.conns.get(&pair(from, to)) else {
            return Err(SendError::NotConnected(to));
        };
        let mut frame = BytesMut::new();
        message.encode(&mut frame);
        let delay = self.rng.gen_range(Duration::ZERO..=self.faults.max_delay);
        let lost = self.rng.gen_bool(self.faults.loss);
        let last = self.last_arrival.get(&(from, to)).copied().unwrap_or(Instant::now());
        let at = (Instant::now() + delay).max(last);
        self.last_arrival.insert((from, to), at);
        self.push(at, Delivery::Message { from, to, generation, frame: frame.freeze(), lost });
        Ok(())
    }
}

/// One incarnation of a server's end of the network.
pub struct SimTransport {
    me: ServerId,
    incarnation: u64,
    net: Net,
}

impl SimTransport {
    /// The state, if this incarnation is still the live one (a crashed one's sends go nowhere).
    fn live(&self) -> Option<MutexGuard<'_, State>> {
        let state = self.net.state();
        (state.ends.get(&self.me).map(|e| e.0) == Some(self.incarnation)).then_some(state)
    }
}

impl Transport for SimTransport {
    fn send(&self, to: ServerId, message: Message) -> Result<(), SendError> {
        let mut state = self.live().ok_or(SendError::NotConnected(to))?;
        state.send(self.me, to, &message)?;
        drop(state);
        self.net.wake.notify_one();
        Ok(())
    }

    /// Pulls the whole stream at once (the real transport pulls it as the socket drains): what is sent after it
    /// still follows it. A failed read breaks the connection, as it closes the real one.
    fn send_stream(&self, to: ServerId, stream: MessageStream) -> Result<(), SendError> {
        let mut state = self.live().ok_or(SendError::NotConnected(to))?;
        if !matches!(state.conns.get(&pair(self.me, to)), Some(Conn::Up(_))) {
            return Err(SendError::NotConnected(to));
        }
        for message in stream {
            match message {
                Ok(message) => state.send(self.me, to, &message)?,
                Err(_) => {
                    state.break_conn(pair(self.me, to));
                    break;
                }
            }
        }
        drop(state);
        self.net.wake.notify_one();
        Ok(())
    }

    fn disconnect(&self, peer: ServerId) {
        if let Some(mut state) = self.live() {
            state.break_conn(pair(self.me, peer));
        }
        self.net.wake.notify_one();
    }
}
