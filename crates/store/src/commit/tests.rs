use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use super::*;

/// A writer of numbers whose `apply` records each group, tells `entered`
/// when it starts one, and waits for `gate` before it returns; a group that
/// holds a negative number fails.
struct Harness {
    writer: GroupCommit<i64>,
    groups: Arc<Mutex<Vec<Vec<i64>>>>,
    entered: std_mpsc::Receiver<()>,
    gate: std_mpsc::Sender<()>,
}

fn harness(limits: Limits, gated: bool) -> Harness {
    let groups = Arc::new(Mutex::new(Vec::new()));
    let (entered_tx, entered) = std_mpsc::channel();
    let (gate, gate_rx) = std_mpsc::channel::<()>();
    let recorded = groups.clone();
    let writer = GroupCommit::start("test", limits, |_| 1, move |writes: Vec<i64>| {
        let _ = entered_tx.send(());
        if gated {
            let _ = gate_rx.recv();
        }
        let failed = writes.iter().any(|w| *w < 0);
        recorded.lock().unwrap().push(writes);
        if failed { Err("a negative write".into()) } else { Ok(()) }
    })
    .unwrap();
    Harness { writer, groups, entered, gate }
}

fn answered(ack: &mut Ack) -> Option<Result<(), CommitError>> {
    ack.answer.try_recv().ok()
}

#[test]
fn writes_are_applied_in_order_and_acknowledged() {
    let h = harness(Limits::default(), false);
    let acks: Vec<Ack> = (0..100).map(|i| h.writer.submit(vec![2 * i, 2 * i + 1])).collect();
    for ack in acks {
        assert_eq!(ack.blocking_wait(), Ok(()));
    }
    let applied: Vec<i64> = h.groups.lock().unwrap().concat();
    assert_eq!(applied, (0..200).collect::<Vec<_>>());
}

#[test]
fn an_ack_is_answered_only_after_its_commit() {
    let h = harness(Limits::default(), true);
    let mut ack = h.writer.submit(vec![1]);
    h.entered.recv().unwrap();
    // `apply` has the write and has not returned: no answer yet.
    assert_eq!(answered(&mut ack), None);
    let mut barrier = h.writer.barrier();
    assert_eq!(answered(&mut barrier), None);
    h.gate.send(()).unwrap();
    assert_eq!(ack.blocking_wait(), Ok(()));
    assert_eq!(barrier.blocking_wait(), Ok(()), "a barrier with nothing of its own commits nothing");
    assert_eq!(*h.groups.lock().unwrap(), vec![vec![1]]);
    // An idle writer answers a barrier at once.
    assert_eq!(h.writer.barrier().blocking_wait(), Ok(()));
}

#[test]
fn what_arrives_during_a_commit_goes_into_the_next_within_the_limits() {
    let h = harness(Limits { max_requests: 3, max_bytes: usize::MAX, linger: Duration::ZERO }, true);
    let first = h.writer.submit(vec![0]);
    h.entered.recv().unwrap();
    let acks: Vec<Ack> = (1..=5).map(|i| h.writer.submit(vec![i])).collect();
    for _ in 0..3 {
        h.gate.send(()).unwrap();
    }
    first.blocking_wait().unwrap();
    for ack in acks {
        ack.blocking_wait().unwrap();
    }
    assert_eq!(*h.groups.lock().unwrap(), vec![vec![0], vec![1, 2, 3], vec![4, 5]]);
}

#[test]
fn bytes_bound_a_group_but_never_split_a_request() {
    // Each write weighs 1: at most 2 bytes beyond the first request.
    let h = harness(Limits { max_requests: 100, max_bytes: 2, linger: Duration::ZERO }, true);
    let first = h.writer.submit(vec![0]);
    h.entered.recv().unwrap();
    let big = h.writer.submit(vec![1, 2, 3]);
    let small = h.writer.submit(vec![4]);
    let last = h.writer.submit(vec![5]);
    for _ in 0..3 {
        h.gate.send(()).unwrap();
    }
    for ack in [first, big, small, last] {
        ack.blocking_wait().unwrap();
    }
    assert_eq!(*h.groups.lock().unwrap(), vec![vec![0], vec![1, 2, 3], vec![4, 5]]);
}

#[test]
fn a_failed_commit_fails_each_of_its_requests_and_the_writer_goes_on() {
    let h = harness(Limits::default(), true);
    let first = h.writer.submit(vec![0]);
    h.entered.recv().unwrap();
    let bad = h.writer.submit(vec![-1]);
    let same_group = h.writer.push(vec![7]);
    h.gate.send(()).unwrap();
    h.gate.send(()).unwrap();
    assert_eq!(first.blocking_wait(), Ok(()));
    assert_eq!(bad.blocking_wait(), Err(CommitError::Failed("a negative write".into())));
    assert_eq!(same_group.blocking_wait(), Err(CommitError::Failed("a negative write".into())));
    h.gate.send(()).unwrap();
    assert_eq!(h.writer.submit(vec![8]).blocking_wait(), Ok(()));
}

#[test]
fn dropping_the_writer_commits_everything_handed_over_first() {
    let h = harness(Limits { linger: Duration::from_millis(1), ..Limits::default() }, false);
    let acks: Vec<Ack> = (0..50).map(|i| h.writer.push(vec![i])).collect();
    drop(h.writer);
    // The drop waited for the thread: everything is applied and answered.
    assert_eq!(h.groups.lock().unwrap().concat(), (0..50).collect::<Vec<_>>());
    for mut ack in acks {
        assert_eq!(answered(&mut ack), Some(Ok(())));
    }
}

#[test]
fn a_writer_whose_thread_is_gone_answers_stopped() {
    let writer = GroupCommit::start("doomed", Limits::default(), |_| 1, |_: Vec<u8>| -> Result<(), String> {
        panic!("the writer's thread dies")
    })
    .unwrap();
    assert_eq!(writer.submit(vec![1]).blocking_wait(), Err(CommitError::Stopped("doomed")));
    assert_eq!(writer.submit(vec![2]).blocking_wait(), Err(CommitError::Stopped("doomed")));
}
