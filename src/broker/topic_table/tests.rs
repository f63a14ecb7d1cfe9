use super::*;
use crate::topic::TopicName;

/// A topic name, checked.
fn t(name: &str) -> TopicName<'_> {
    TopicName::new(name).unwrap()
}
use crate::broker::mailbox::{mailbox, Inbox};
use std::sync::Arc;

fn table(
    workers: usize,
    history_depth: usize,
    max_topics: usize,
) -> (TopicTable, Vec<Inbox>, Vec<mio::Poll>) {
    let mut mailboxes = Vec::new();
    let mut inboxes = Vec::new();
    let mut polls = Vec::new();
    for _ in 0..workers {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (mailbox, inbox) = mailbox(waker);
        mailboxes.push(mailbox);
        inboxes.push(inbox);
        polls.push(poll);
    }
    let limits = TableLimits {
        shards: 4,
        history_depth,
        max_topics,
        topic_ttl: Duration::from_secs(60),
    };
    (TopicTable::new(limits, mailboxes), inboxes, polls)
}

fn seqs(inbox: &Inbox) -> Vec<u64> {
    std::iter::from_fn(|| inbox.try_take())
        .filter_map(|d| match d {
            Delivery::Tick(t) => Some(t.seq),
            Delivery::Reconnect | Delivery::Stored { .. } => None,
        })
        .collect()
}

#[test]
fn snapshot_then_live_only_to_workers_with_subscribers() {
    let (table, inboxes, _polls) = table(2, 8, 100);
    table.publish(&t("A"), b"1").unwrap();
    table.publish(&t("A"), b"2").unwrap();
    let sub = table.subscribe(&t("A"), 1, Start::Latest);
    assert_eq!(sub.seq, 2);
    assert_eq!(sub.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(sub.gap, None);
    table.publish(&t("A"), b"3").unwrap();
    assert_eq!(seqs(&inboxes[0]), Vec::<u64>::new());
    assert_eq!(seqs(&inboxes[1]), vec![3]);
    table.unsubscribe("A", sub.topic, 1);
    table.publish(&t("A"), b"4").unwrap();
    assert_eq!(seqs(&inboxes[1]), Vec::<u64>::new());
}

#[test]
fn replay_after_since_and_gap_when_overrun() {
    let (table, _inboxes, _polls) = table(1, 4, 100);
    for i in 0..10 {
        table.publish(&t("A"), i.to_string().as_bytes()).unwrap();
    }
    // History holds 7..=10.
    let sub = table.subscribe(
        &t("A"),
        0,
        Start::After {
            since: 8,
            epoch: None,
        },
    );
    assert_eq!(sub.gap, None);
    assert_eq!(
        sub.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(),
        vec![9, 10]
    );
    let sub = table.subscribe(
        &t("A"),
        0,
        Start::After {
            since: 3,
            epoch: None,
        },
    );
    assert_eq!(sub.gap, Some((4, 6)));
    assert_eq!(
        sub.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
    let sub = table.subscribe(
        &t("A"),
        0,
        Start::After {
            since: 10,
            epoch: Some(&sub.epoch),
        },
    );
    assert_eq!((sub.gap, sub.ticks.len()), (None, 0));
}

#[test]
fn another_epoch_gets_gap_and_snapshot() {
    let (table, _inboxes, _polls) = table(1, 4, 100);
    for _ in 0..3 {
        table.publish(&t("A"), b"0").unwrap();
    }
    let sub = table.subscribe(
        &t("A"),
        0,
        Start::After {
            since: 1,
            epoch: Some("old"),
        },
    );
    assert_eq!(sub.gap, Some((1, 3)));
    assert_eq!(sub.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![3]);
    let future = table.subscribe(
        &t("A"),
        0,
        Start::After {
            since: 99,
            epoch: None,
        },
    );
    assert_eq!(future.gap, Some((1, 3)));
}

#[test]
fn history_depth_zero_still_has_a_snapshot() {
    let (table, _inboxes, _polls) = table(1, 0, 100);
    table.publish(&t("A"), b"1").unwrap();
    table.publish(&t("A"), b"2").unwrap();
    let sub = table.subscribe(
        &t("A"),
        0,
        Start::After {
            since: 0,
            epoch: None,
        },
    );
    assert_eq!(sub.gap, Some((1, 2)));
    assert_eq!(sub.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn topic_limit_and_reclaim_with_new_epoch() {
    let (table, _inboxes, _polls) = table(1, 4, 2);
    table.publish(&t("A"), b"1").unwrap();
    table.publish(&t("B"), b"1").unwrap();
    let first_epoch = table.subscribe(&t("B"), 0, Start::Latest);
    assert_eq!(table.publish(&t("C"), b"1"), Err(PublishError::TooManyTopics));
    let later = Instant::now() + Duration::from_secs(120);
    // B has a subscriber and stays; A is reclaimed.
    assert_eq!(table.reclaim(later, 0, 1), 1);
    assert_eq!(table.topic_count(), 1);
    table.unsubscribe("B", first_epoch.topic, 0);
    assert_eq!(table.reclaim(later, 0, 1), 1);
    let again = table.subscribe(&t("B"), 0, Start::Latest);
    assert_ne!(again.epoch, first_epoch.epoch);
    assert_eq!(again.seq, 0);
}

#[test]
fn subscribing_to_unpublished_topics_takes_no_place_in_the_limit() {
    let (table, inboxes, _polls) = table(1, 4, 2);
    table.publish(&t("A"), b"1").unwrap();
    // A client inventing names: each entry is free and leaves with it.
    for i in 0..1000 {
        let name = format!("invented{i}");
        let sub = table.subscribe(&t(&name), 0, Start::Latest);
        assert_eq!(sub.seq, 0);
        table.unsubscribe(&name, sub.topic, 0);
    }
    let held = table.subscribe(&t("held"), 0, Start::Latest);
    assert_eq!(table.topic_count(), 1);
    assert_eq!(table.shards.iter().map(|s| lock(s).len()).sum::<usize>(), 2);
    // A publisher may still create topics up to the limit ...
    table.publish(&t("B"), b"1").unwrap();
    assert_eq!(table.publish(&t("C"), b"1"), Err(PublishError::TooManyTopics));
    // ... and a refused publish leaves nothing behind.
    assert_eq!(table.shards.iter().map(|s| lock(s).len()).sum::<usize>(), 3);
    // The subscribed, unpublished topic is the limit's business only once
    // published to; its subscriber then gets the tick.
    assert_eq!(table.publish(&t("held"), b"1"), Err(PublishError::TooManyTopics));
    table.unsubscribe("held", held.topic, 0);
    assert!(seqs(&inboxes[0]).is_empty());
}

#[test]
fn a_batch_is_published_whole_or_not_at_all() {
    let (table, inboxes, _polls) = table(1, 8, 3);
    table.subscribe(&t("A"), 0, Start::Latest);
    table.publish(&t("A"), b"0").unwrap();
    let names: Vec<TopicName<'_>> = ["A", "B", "C", "D"].into_iter().map(t).collect();
    let item = |i: usize| BatchItem {
        topic: &names[i],
        data: b"1",
    };
    // A, B and C fit (A exists); A, B, C and D do not: nothing of it is published.
    assert_eq!(
        table.publish_batch(&[item(0), item(1), item(2), item(3)], None),
        Err(PublishError::TooManyTopics)
    );
    assert_eq!(table.latest_seq("A"), 1);
    assert_eq!(table.topic_count(), 1);
    assert_eq!(seqs(&inboxes[0]), vec![1]);
    let published = table
        .publish_batch(&[item(0), item(1), item(0), item(2)], None)
        .unwrap();
    let seqs_published: Vec<u64> = published.iter().filter_map(|p| p.seq).collect();
    assert_eq!(seqs_published, vec![2, 1, 3, 1]);
    assert_eq!(table.topic_count(), 3);
    assert_eq!(seqs(&inboxes[0]), vec![2, 3]);
}

#[test]
fn concurrent_publishers_are_seen_in_seq_order() {
    let (table, inboxes, _polls) = table(2, 16, 100);
    table.subscribe(&t("A"), 0, Start::Latest);
    table.subscribe(&t("A"), 1, Start::Latest);
    let table = Arc::new(table);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    table.publish(&t("A"), b"0").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for inbox in &inboxes {
        assert_eq!(seqs(inbox), (1..=8000).collect::<Vec<u64>>());
    }
}

/// A cluster engine stand-in: records submissions, serves when told.
#[derive(Debug, Default)]
struct FakeLink {
    submitted: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
    receipts: std::sync::Mutex<Vec<Option<Receipt>>>,
    serving: std::sync::atomic::AtomicBool,
}

impl ClusterLink for FakeLink {
    fn submit(&self, topic: &TopicName<'_>, data: &[u8], _ts: u64, receipt: Option<Receipt>) -> Result<(), NotServing> {
        self.receipts.lock().unwrap().push(receipt);
        self.submitted
            .lock()
            .unwrap()
            .push((topic.as_str().to_owned(), data.to_vec()));
        Ok(())
    }
    fn window_full(&self) -> bool {
        false
    }
    fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }
}

fn cluster_table(history_depth: usize, max_topics: usize) -> (TopicTable, Arc<FakeLink>, Vec<Inbox>, Vec<mio::Poll>) {
    let (local, inboxes, polls) = table(1, history_depth, max_topics);
    let link = Arc::new(FakeLink::default());
    let TopicTable { mailboxes, limits, .. } = local;
    let table = TopicTable::with_cluster(limits, mailboxes.into_vec(), Arc::clone(&link) as Arc<dyn ClusterLink>);
    (table, link, inboxes, polls)
}

#[test]
fn cluster_publishes_go_to_the_link_and_ticks_come_back_by_apply() {
    let (table, link, inboxes, _polls) = cluster_table(8, 100);
    assert_eq!(table.publish(&t("A"), b"1"), Err(PublishError::NotServing));
    assert!(!table.serving());
    link.serving.store(true, Ordering::Relaxed);
    assert!(table.set_cluster_epoch("S-1f".to_owned()));
    let sub = table.subscribe(&t("A"), 0, Start::Latest);
    assert_eq!(sub.epoch, "S-1f");
    assert_eq!(table.publish(&t("A"), b"1"), Ok(Published { seq: None }));
    // Not numbered, not delivered: only what comes back from the stream is.
    assert_eq!(seqs(&inboxes[0]), Vec::<u64>::new());
    assert_eq!(link.submitted.lock().unwrap().len(), 1);
    assert_eq!(table.apply(&t("A"), 5, 1, b"1"), Some(0));
    assert_eq!(table.apply(&t("B"), 6, 1, b"2"), Some(0));
    assert_eq!(table.apply(&t("A"), 9, 1, b"3"), Some(5));
    // A re-read message is applied once.
    assert_eq!(table.apply(&t("A"), 9, 1, b"3"), None);
    assert_eq!(seqs(&inboxes[0]), vec![5, 9]);
    assert_eq!(table.latest_seq("A"), 9);
    assert_eq!(table.topic_count(), 2);
}

#[test]
fn cluster_replay_uses_prev_for_gaps() {
    let (table, link, _inboxes, _polls) = cluster_table(2, 100);
    link.serving.store(true, Ordering::Relaxed);
    table.set_cluster_epoch("E".to_owned());
    for seq in [3, 10, 20, 31] {
        table.apply(&t("A"), seq, 1, b"0");
    }
    // History keeps 20 (prev 10) and 31 (prev 20).
    let since = |since| table.subscribe(&t("A"), 0, Start::After { since, epoch: Some("E") });
    let after_20 = since(20);
    assert_eq!(after_20.gap, None);
    assert_eq!(after_20.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![31]);
    // 10 is the prev of 20: nothing missing, though 11..19 are not seqs of A.
    let after_10 = since(10);
    assert_eq!(after_10.gap, None);
    assert_eq!(after_10.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![20, 31]);
    // 3 is older than the window: 10 is missing.
    let after_3 = since(3);
    assert_eq!(after_3.gap, Some((4, 10)));
    assert_eq!(after_3.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![20, 31]);
    assert_eq!(since(31).ticks.len(), 0);
    // Another epoch: the snapshot and the whole range as a gap.
    let other = table.subscribe(&t("A"), 0, Start::After { since: 20, epoch: Some("old") });
    assert_eq!(other.gap, Some((1, 31)));
    assert_eq!(other.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![31]);
}

#[test]
fn cluster_publish_checks_the_topic_limit_before_the_stream() {
    let (table, link, _inboxes, _polls) = cluster_table(2, 1);
    link.serving.store(true, Ordering::Relaxed);
    table.set_cluster_epoch("E".to_owned());
    table.apply(&t("A"), 1, 1, b"0");
    assert_eq!(table.publish(&t("A"), b"1"), Ok(Published { seq: None }));
    assert_eq!(table.publish(&t("B"), b"1"), Err(PublishError::TooManyTopics));
    let names = [t("A"), t("C")];
    let batch: Vec<BatchItem<'_>> = names.iter().map(|topic| BatchItem { topic, data: b"1" }).collect();
    assert_eq!(table.publish_batch(&batch, None), Err(PublishError::TooManyTopics));
    assert_eq!(link.submitted.lock().unwrap().len(), 1);
}

#[test]
fn cluster_batch_receipts_name_each_item_and_outcomes_reach_their_worker() {
    let (table, link, inboxes, _polls) = cluster_table(2, 100);
    link.serving.store(true, Ordering::Relaxed);
    table.set_cluster_epoch("E".to_owned());
    let names = [t("A"), t("B")];
    let batch: Vec<BatchItem<'_>> = names.iter().map(|topic| BatchItem { topic, data: b"1" }).collect();
    let first = table.new_request_id();
    let request = table.new_request_id();
    assert_ne!(first, request, "request ids are never reused");
    let reply_to = ReplyTo { worker: 0, token: 7, request };
    let published = table.publish_batch(&batch, Some(reply_to)).unwrap();
    assert_eq!(published, vec![Published { seq: None }; 2]);
    let receipts = link.receipts.lock().unwrap().clone();
    assert_eq!(receipts, vec![Some(reply_to.receipt(0)), Some(reply_to.receipt(1))]);
    assert_eq!(receipts[1].unwrap().item, 1);
    table.report_stored(reply_to.receipt(1), Some(42));
    table.report_stored(reply_to.receipt(0), None);
    let mut outcomes = Vec::new();
    while let Some(delivery) = inboxes[0].try_take() {
        if let Delivery::Stored { receipt, seq } = delivery {
            outcomes.push((receipt.item, receipt.to.token, receipt.to.request, seq));
        }
    }
    assert_eq!(outcomes, vec![(1, 7, request, Some(42)), (0, 7, request, None)]);
    // A receipt naming a worker that does not exist is dropped, not a panic.
    table.report_stored(ReplyTo { worker: 9, ..reply_to }.receipt(0), Some(1));
}

#[test]
fn cluster_subscriber_ahead_of_this_node_waits_for_its_next_tick() {
    let (table, link, inboxes, _polls) = cluster_table(8, 100);
    link.serving.store(true, Ordering::Relaxed);
    table.set_cluster_epoch("E".to_owned());
    table.apply(&t("A"), 4, 1, b"0");
    // The client saw 7 on a node further ahead: no gap, nothing replayed,
    // and ticks up to 7 are not sent again when this node applies them.
    let sub = table.subscribe(&t("A"), 0, Start::After { since: 7, epoch: Some("E") });
    assert_eq!((sub.gap, sub.ticks.len(), sub.seq), (None, 0, 7));
    // Another epoch still gets the snapshot and a gap.
    let other = table.subscribe(&t("A"), 0, Start::After { since: 7, epoch: Some("old") });
    assert_eq!(other.gap, Some((1, 4)));
    table.apply(&t("A"), 7, 1, b"1");
    table.apply(&t("A"), 9, 1, b"2");
    assert_eq!(seqs(&inboxes[0]), vec![7, 9], "the worker skips 7 for the first by its start seq");
}

#[test]
fn a_topic_expires_a_ttl_after_its_last_subscriber_left_not_after_its_last_publish() {
    let (table, _inboxes, _polls) = table(1, 4, 100);
    let sub = table.subscribe(&t("A"), 0, Start::Latest);
    table.publish(&t("A"), b"1").unwrap();
    table.unsubscribe("A", sub.topic, 0);
    let left = Instant::now();
    assert_eq!(table.reclaim(left + Duration::from_secs(59), 0, 1), 0);
    assert_eq!(table.latest_seq("A"), 1);
    assert_eq!(table.reclaim(left + Duration::from_secs(61), 0, 1), 1);
    assert_eq!(table.latest_seq("A"), 0);
}

#[test]
fn the_snapshot_is_the_newest_tick_with_or_without_history() {
    for depth in [0, 1, 3] {
        let (table, _inboxes, _polls) = table(1, depth, 100);
        for data in [b"1", b"2", b"3", b"4"] {
            table.publish(&t("A"), data).unwrap();
        }
        let sub = table.subscribe(&t("A"), 0, Start::Latest);
        assert_eq!(sub.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![4], "depth {depth}");
    }
}
