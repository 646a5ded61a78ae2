//! `AsyncPeer` under load on both backends: many messages from several
//! senders, several tasks waiting on one peer, pending receives cancelled
//! again and again, and disconnection.

mod common;

use bus1::{AsyncPeer, Backend, Error, Event, HandleId, NodeId, Peer};
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

const SENDERS: usize = 4;
const PER_SENDER: u32 = 2000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A receiver in the runtime, `n` senders each with a handle on its node.
fn setup(b: &Backend, n: usize) -> (AsyncPeer, Vec<(Peer, HandleId)>) {
    let rx = Peer::open(b.clone()).unwrap();
    let senders = (0..n)
        .map(|_| {
            let s = Peer::open(b.clone()).unwrap();
            let h = s.handle_from(&rx, NodeId::new(0x100).unwrap()).unwrap();
            (s, h)
        })
        .collect();
    (AsyncPeer::new(rx).unwrap(), senders)
}

/// (sender, sequence number) of a test message.
fn decode(e: Event<'_>) -> (usize, u32) {
    match e {
        Event::Message(m) => {
            let p = m.payload();
            (p[0] as usize, u32::from_le_bytes(p[1..5].try_into().unwrap()))
        }
        other => panic!("{other:?}"),
    }
}

/// Sends PER_SENDER messages from each sender, on threads of their own,
/// which give the peers back (a peer that went away would end its handle
/// and make the receiver's node report a NODE_RELEASE).
fn flood(senders: Vec<(Peer, HandleId)>) -> Vec<std::thread::JoinHandle<Peer>> {
    senders
        .into_iter()
        .enumerate()
        .map(|(i, (s, h))| {
            std::thread::spawn(move || {
                for seq in 0..PER_SENDER {
                    let head = [[i as u8].as_slice(), &seq.to_le_bytes()].concat();
                    loop {
                        match s.send(&[h], &[IoSlice::new(&head), IoSlice::new(&[0u8; 512])]) {
                            Ok(()) => break,
                            // The receiver's quota is full: let it catch up.
                            Err(Error::Quota) => std::thread::sleep(Duration::from_micros(200)),
                            Err(e) => panic!("send: {e}"),
                        }
                    }
                    if seq % 256 == 0 {
                        std::thread::yield_now();
                    }
                }
                s
            })
        })
        .collect()
}

/// CPU time this thread has used, in clock ticks (user + system).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

both_backends! {
    fn an_idle_receive_sleeps(b: Backend) {
        // A receive on a runtime of this thread that waits 500 ms for
        // nothing: a busy loop would spend those 500 ms (50 ticks) of CPU.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let rx = AsyncPeer::new(Peer::open(b.clone()).unwrap()).unwrap();
            let t0 = thread_cpu_ticks();
            let r = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
            assert!(r.is_err());
            let used = thread_cpu_ticks() - t0;
            assert!(used <= 10, "an idle receive used {used} ticks of CPU in 500 ms");
        });
    }

    fn one_task_receives_everything_in_order(b: Backend) {
        let rt = runtime();
        let (rx, senders) = rt.block_on(async { setup(&b, SENDERS) });
        let threads = flood(senders);
        rt.block_on(async {
            let mut next = [0u32; SENDERS];
            for _ in 0..SENDERS as u32 * PER_SENDER {
                let (i, seq) = decode(tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("no lost wake-up").unwrap());
                assert_eq!(seq, next[i], "per-sender order");
                next[i] += 1;
            }
            assert_eq!(rx.try_recv().err(), Some(Error::Again));
        });
        let peers: Vec<Peer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        drop(peers);
    }

    fn several_tasks_share_one_peer(b: Backend) {
        let rt = runtime();
        let (rx, senders) = rt.block_on(async { setup(&b, SENDERS) });
        let rx = Arc::new(rx);
        let total = SENDERS as u32 * PER_SENDER;
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (rx, count) = (rx.clone(), count.clone());
                rt.spawn(async move {
                    let mut mine = 0u32;
                    loop {
                        tokio::select! {
                            r = rx.recv() => {
                                decode(r.unwrap());
                                mine += 1;
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            // Every task keeps waiting until all arrived.
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                                if count.load(std::sync::atomic::Ordering::SeqCst) == total {
                                    return mine;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let threads = flood(senders);
        let got: u32 = rt.block_on(async {
            let mut sum = 0;
            for t in tasks {
                sum += tokio::time::timeout(Duration::from_secs(60), t).await.expect("no lost wake-up").unwrap();
            }
            sum
        });
        assert_eq!(got, total);
        let peers: Vec<Peer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        drop(peers);
    }

    fn cancelled_receives_lose_nothing(b: Backend) {
        let rt = runtime();
        let (rx, mut senders) = rt.block_on(async { setup(&b, 1) });
        let (s, h) = senders.remove(0);
        rt.block_on(async {
            for round in 0..300u32 {
                // A pending receive, given up before anything comes.
                let r = tokio::time::timeout(Duration::from_micros(50 + (round % 7) as u64 * 100), rx.recv()).await;
                assert!(r.is_err(), "nothing was sent yet");
                s.send(&[h], &[IoSlice::new(&[0]), IoSlice::new(&round.to_le_bytes())]).unwrap();
                let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("no lost wake-up");
                assert_eq!(decode(got.unwrap()), (0, round));
            }
        });
        // A sender racing with receives that keep being cancelled.
        let t = std::thread::spawn(move || {
            for seq in 0..2000u32 {
                s.send(&[h], &[IoSlice::new(&[0]), IoSlice::new(&seq.to_le_bytes())]).unwrap();
                if seq % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        });
        rt.block_on(async {
            let mut next = 0u32;
            while next < 2000 {
                tokio::select! {
                    r = rx.recv() => {
                        assert_eq!(decode(r.unwrap()), (0, next));
                        next += 1;
                    }
                    _ = tokio::task::yield_now() => {}
                }
            }
        });
        t.join().unwrap();
    }

    fn a_disconnected_peer_ends_its_receives(b: Backend) {
        let rt = runtime();
        rt.block_on(async {
            let (mut rx, senders) = setup(&b, 1);
            let (s, h) = &senders[0];
            s.send(&[*h], &[IoSlice::new(b"before")]).unwrap();
            assert!(matches!(rx.recv().await.unwrap(), Event::Message(_)));
            rx.disconnect().unwrap();
            assert_eq!(rx.recv().await.err(), Some(Error::Shutdown));
            // The sender learns of the node's end from its own peer.
            let sp = AsyncPeer::new(Peer::open(b.clone()).unwrap()).unwrap();
            let _ = sp;
            let peer = rx.into_inner();
            assert_eq!(peer.query(), Err(Error::Shutdown));
        });
    }

    fn a_notification_wakes_a_waiting_task(b: Backend) {
        let rt = runtime();
        rt.block_on(async {
            let owner = Peer::open(b.clone()).unwrap();
            let holder = AsyncPeer::new(Peer::open(b.clone()).unwrap()).unwrap();
            let node = NodeId::new(0x40).unwrap();
            let h = holder.handle_from(&owner, node).unwrap();
            let holder = Arc::new(holder);
            let waiting = {
                let holder = holder.clone();
                tokio::spawn(async move {
                    match holder.recv().await.unwrap() {
                        Event::NodeDestroy { handle, .. } => handle,
                        other => panic!("{other:?}"),
                    }
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            owner.destroy(&[node], false).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("woken").unwrap();
            assert_eq!(got, h);
        });
    }
}
