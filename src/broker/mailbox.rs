//! A worker's mailbox: the channel other threads hand ticks through, and the
//! waker that gets a sleeping worker to look at it.
//!
//! Waking costs more than a write on these machines (DESIGN.md: ~7.5 µs in
//! the waker's `write()`), so a worker is woken only when it is about to
//! sleep or asleep, and only by the first delivery of a burst: the worker
//! raises `sleeping` before it blocks, and a sender that lowers it is the one
//! that wakes. Both sides put a SeqCst fence between their store and their
//! check, so either the worker sees the delivery or the sender sees the flag.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::broker::cluster_link::Receipt;
use crate::tick::Tick;

/// What crosses from a publisher's thread to a subscriber's worker.
#[derive(Debug, Clone)]
pub enum Delivery {
    Tick(Tick),
    /// Cluster mode: the node lost the stream; close every subscriber with
    /// 4000 "reconnect elsewhere" (README.md, "Cluster").
    Reconnect,
    /// Cluster mode: the outcome of a publish a connection of this worker
    /// waits for: the stream sequence it was stored at, or `None` when it
    /// was given up (see [`crate::broker::cluster_link::Receipt`]).
    Stored { receipt: Receipt, seq: Option<u64> },
}

/// The sending side of one worker's mailbox.
#[derive(Debug)]
pub struct Mailbox {
    sender: Sender<Delivery>,
    waker: Arc<Waker>,
    sleeping: AtomicBool,
}

/// The receiving side, owned by the worker.
#[derive(Debug)]
pub struct Inbox {
    receiver: Receiver<Delivery>,
}

/// Creates a worker's mailbox around the waker registered with its poll.
pub fn mailbox(waker: Arc<Waker>) -> (Mailbox, Inbox) {
    let (sender, receiver) = crossbeam_channel::unbounded();
    (
        Mailbox {
            sender,
            waker,
            sleeping: AtomicBool::new(false),
        },
        Inbox { receiver },
    )
}

impl Mailbox {
    /// Queues a delivery; never blocks. Returns true when the worker was
    /// asleep (or going to sleep) and the caller must [`Self::wake`] it.
    pub fn post(&self, delivery: Delivery) -> bool {
        // The receiver lives as long as the worker; after it exits, ticks
        // for it have nowhere to go and are dropped.
        let _ = self.sender.send(delivery);
        fence(Ordering::SeqCst);
        self.sleeping.swap(false, Ordering::SeqCst)
    }

    /// Deliveries waiting for the worker.
    pub fn backlog(&self) -> usize {
        self.sender.len()
    }

    /// Wakes the worker (a syscall: call it outside any lock).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Marks the worker as about to block; true if it may, false if a
    /// delivery is already waiting (then it must not sleep).
    pub fn prepare_to_sleep(&self, inbox: &Inbox) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if inbox.receiver.is_empty() {
            true
        } else {
            self.sleeping.store(false, Ordering::SeqCst);
            false
        }
    }

    /// Marks the worker as awake again after its poll returned.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

impl Inbox {
    /// Takes the next delivery without blocking.
    pub fn try_take(&self) -> Option<Delivery> {
        self.receiver.try_recv().ok()
    }
}
