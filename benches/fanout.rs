//! The fan-out path inside one process: publish into the topic table, take
//! the tick from the worker's mailbox, queue it on N subscribers' outbound
//! queues, and flush each queue into a loopback socket drained by another
//! thread — the broker's hot path without the event loop.
//!
//! Two ways of writing a burst of small ticks are compared, as DESIGN.md
//! asks: one `writev` of the shared frames, and copying the frames into one
//! contiguous buffer per connection and one `write` — plus `OutQueue`'s own
//! path (`push_tick`), which copies small ticks because that measured
//! faster. Throughput is in delivered ticks (elements) per second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use tickfan::topic::TopicName;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickfan::broker::mailbox::{mailbox, Delivery, Inbox};
use tickfan::broker::topic_table::{Start, TableLimits, TopicTable};
use tickfan::config::SlowConsumerPolicy;
use tickfan::net::conn_io::write_out;
use tickfan::net::out_queue::OutQueue;

/// A realistic ~100-byte tick payload.
const DATA: &[u8] =
    br#"{"sym":"AAPL","bid":189.21,"ask":189.23,"bsz":300,"asz":200,"t":1732190000123456789}"#;

/// Ticks per burst: what a worker typically finds in its mailbox per wake.
const BURST: usize = 64;

struct Rig {
    table: TopicTable,
    inbox: Inbox,
    _poll: mio::Poll,
    /// One connected socket per subscriber; the peer ends are drained.
    sockets: Vec<TcpStream>,
    queues: Vec<OutQueue>,
    copies: Vec<Vec<u8>>,
}

fn rig(subscribers: usize) -> Rig {
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (mailbox, inbox) = mailbox(waker);
    let table = TopicTable::new(
        TableLimits {
            shards: 16,
            history_depth: 1024,
            max_topics: 1000,
            topic_ttl: std::time::Duration::from_secs(3600),
        },
        vec![mailbox],
    );
    table.subscribe(&TopicName::new("AAPL").unwrap(), 0, Start::Latest);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut sockets = Vec::new();
    for _ in 0..subscribers {
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nodelay(true).unwrap();
        thread::spawn(move || drain(client));
        sockets.push(server);
    }
    Rig {
        table,
        inbox,
        _poll: poll,
        sockets,
        queues: (0..subscribers).map(|_| OutQueue::default()).collect(),
        copies: (0..subscribers).map(|_| Vec::new()).collect(),
    }
}

fn drain(mut socket: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
}

fn publish_burst(rig: &Rig) {
    for _ in 0..BURST {
        rig.table
            .publish(&TopicName::new("AAPL").unwrap(), DATA)
            .unwrap();
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for subscribers in [10usize, 100] {
        let mut rig = rig(subscribers);
        group.throughput(Throughput::Elements((subscribers * BURST) as u64));
        group.bench_function(BenchmarkId::new("writev_shared_frames", subscribers), |b| {
            b.iter(|| {
                publish_burst(&rig);
                while let Some(Delivery::Tick(tick)) = rig.inbox.try_take() {
                    for queue in rig.queues.iter_mut() {
                        queue.push_tick_unbounded(tick.clone());
                    }
                }
                for (queue, socket) in rig.queues.iter_mut().zip(rig.sockets.iter_mut()) {
                    while !queue.is_empty() {
                        write_out(queue, socket).unwrap();
                    }
                }
            })
        });
        group.bench_function(BenchmarkId::new("out_queue", subscribers), |b| {
            b.iter(|| {
                publish_burst(&rig);
                while let Some(Delivery::Tick(tick)) = rig.inbox.try_take() {
                    for queue in rig.queues.iter_mut() {
                        queue.push_tick(&tick, 1 << 24, SlowConsumerPolicy::Conflate);
                    }
                }
                for (queue, socket) in rig.queues.iter_mut().zip(rig.sockets.iter_mut()) {
                    while !queue.is_empty() {
                        write_out(queue, socket).unwrap();
                    }
                }
            })
        });
        group.bench_function(BenchmarkId::new("copy_into_one_buffer", subscribers), |b| {
            b.iter(|| {
                publish_burst(&rig);
                while let Some(Delivery::Tick(tick)) = rig.inbox.try_take() {
                    for copy in rig.copies.iter_mut() {
                        copy.extend_from_slice(tick.frame());
                    }
                }
                for (copy, socket) in rig.copies.iter_mut().zip(rig.sockets.iter_mut()) {
                    socket.write_all(copy).unwrap();
                    copy.clear();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
