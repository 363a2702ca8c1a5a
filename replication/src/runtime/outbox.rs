//! Messages the peer asked to send during one pass of the server's loop, handed to the transport together.
//!
//! On a leader, every proposal goes to every follower: queued one by one, that is a lock and a channel send per
//! follower per txn; held here until the pass ends, one per follower per pass. Holding a message back is only a
//! delay, which the protocol takes from any network; the loop flushes before anything that must come after the
//! messages already sent ([`Server::flush_outbox`]: a stream, a disconnect) and before it waits for anything (a
//! pass's end, a restart of the peer), so nothing sits here while the loop sleeps. What a pass holds is bounded
//! by what one pass takes in (`MAX_EVENTS_AT_ONCE` messages or proposals, each sending a bounded number).
//!
//! [`Server::flush_outbox`]: super::server::Server::flush_outbox

use crate::message::{Message, ServerId};
use crate::transport::Transport;

/// Each peer's messages, in the order asked.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Few peers (the ensemble's size): a list beats a map.
    queued: Vec<(ServerId, Vec<Message>)>,
}

impl Outbox {
    /// Holds `message` for `to`, after what is held for it already.
    pub(super) fn push(&mut self, to: ServerId, message: Message) {
        match self.queued.iter_mut().find(|(peer, _)| *peer == to) {
            Some((_, messages)) => messages.push(message),
            None => self.queued.push((to, vec![message])),
        }
    }

    /// Hands every held message to the transport, one `send_all` per peer. A peer that cannot take them (not
    /// connected, its queue full and its link dropped) loses them, as it would have lost each one sent alone.
    pub(super) fn flush(&mut self, transport: &dyn Transport) {
        for (to, messages) in self.queued.drain(..) {
            let _ = transport.send_all(to, messages);
        }
    }

    /// Whether nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::transport::{MessageStream, SendError};
    use wal::Zxid;

    /// Records each call.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(ServerId, Vec<Message>)>>);

    impl Transport for Recorder {
        fn send(&self, to: ServerId, message: Message) -> Result<(), SendError> {
            self.send_all(to, vec![message])
        }
        fn send_all(&self, to: ServerId, messages: Vec<Message>) -> Result<(), SendError> {
            self.0.lock().unwrap().push((to, messages));
            Ok(())
        }
        fn send_stream(&self, _: ServerId, _: MessageStream) -> Result<(), SendError> {
            unreachable!("the outbox sends no streams")
        }
        fn disconnect(&self, _: ServerId) {}
    }

    fn commit(n: u64) -> Message {
        Message::Commit { zxid: Zxid(n) }
    }

    #[test]
    fn one_send_per_peer_in_the_order_asked() {
        let (mut outbox, transport) = (Outbox::default(), Recorder::default());
        for n in 1..=3 {
            outbox.push(ServerId(2), commit(n));
            outbox.push(ServerId(3), commit(10 + n));
        }
        outbox.push(ServerId(2), commit(4));
        assert!(!outbox.is_empty());
        outbox.flush(&transport);
        assert!(outbox.is_empty());
        let sent = std::mem::take(&mut *transport.0.lock().unwrap());
        let expected = vec![
            (ServerId(2), vec![commit(1), commit(2), commit(3), commit(4)]),
            (ServerId(3), vec![commit(11), commit(12), commit(13)]),
        ];
        assert_eq!(sent, expected);
        outbox.flush(&transport);
        assert!(transport.0.lock().unwrap().is_empty(), "a flush of nothing sends nothing");
    }
}
