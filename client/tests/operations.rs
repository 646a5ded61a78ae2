//! Every operation of the crate and the errors it reports, on both
//! backends (see `common`).

mod common;

use bus1::{Abi, Backend, Error, Event, HandleId, NodeId, Peer, Reset};
use common::payload;
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

fn node(id: u64) -> NodeId {
    NodeId::new(id).unwrap()
}

/// A pipe through `cat`: what is written to the first end comes out of
/// the second, which ends once every copy of the first is closed.
fn relay() -> (std::process::ChildStdin, std::process::ChildStdout, std::process::Child) {
    use std::process::{Command, Stdio};
    let mut cat = Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("cat");
    let (i, o) = (cat.stdin.take().unwrap(), cat.stdout.take().unwrap());
    (i, o, cat)
}

fn open(b: &Backend) -> Peer {
    Peer::open(b.clone()).expect("open a peer")
}

both_backends! {
    fn query_reports_the_module_defaults(b: Backend) {
        let p = open(&b);
        let l = p.query().unwrap();
        assert_eq!((l.max_slices, l.max_handles, l.max_inflight_bytes, l.max_inflight_fds), (16384, 65536, 16 << 20, 4096));
        assert_eq!(p.abi(), Abi::V1);
    }

    fn reset_changes_limits_and_rejects_bad_ones(b: Backend) {
        let mut p = open(&b);
        p.reset(&Reset::new().max_slices(7).max_inflight_fds(0)).unwrap();
        let l = p.query().unwrap();
        assert_eq!((l.max_slices, l.max_handles, l.max_inflight_fds), (7, 65536, 0));
        assert_eq!(p.reset(&Reset::new().max_handles(0x8000_0000)), Err(Error::Invalid));
        assert_eq!(p.query().unwrap().max_handles, 65536, "a failed reset changes nothing");
    }

    fn reset_flush_drops_the_queue_and_keeps_the_seed(b: Backend) {
        let mut p = open(&b);
        p.send(&[node(4).into()], &[IoSlice::new(b"queued")]).unwrap();
        p.message().payload(&[IoSlice::new(b"seed")]).set_seed().unwrap();
        p.reset(&Reset::new().flush()).unwrap();
        assert_eq!(p.try_recv().err(), Some(Error::Again));
        assert_eq!(p.recv_seed().unwrap().payload(), b"seed");
        p.message().payload(&[IoSlice::new(b"seed 2")]).set_seed().unwrap();
        p.reset(&Reset::new().flush().flush_seed()).unwrap();
        assert_eq!(p.recv_seed().err(), Some(Error::Again));
    }

    fn messages_carry_payload_in_order(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let to_a = c.handle_from(&a, node(0x100)).unwrap();
        for i in 0..50u32 {
            let head = i.to_le_bytes();
            c.send(&[to_a], &[IoSlice::new(&head), IoSlice::new(&[7u8; 1000])]).unwrap();
        }
        for i in 0..50u32 {
            match a.try_recv().unwrap() {
                Event::Message(m) => {
                    assert_eq!(&m.payload()[..4], &i.to_le_bytes());
                    assert_eq!(m.payload().len(), 1004);
                    assert_eq!(m.destination(), node(0x100));
                    assert!(!m.more());
                    let s = m.sender().expect("v1 reports the sender");
                    assert_eq!(s.pid, std::process::id());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(a.try_recv().err(), Some(Error::Again));
    }

    fn dropping_a_message_releases_its_slice(b: Backend) {
        let mut a = open(&b);
        // Room for two queued messages: a sender may take at most half of
        // what the receiver has left (the fair-share rule), 4 -> 2.
        a.reset(&Reset::new().max_slices(4)).unwrap();
        let n = node(0x10).into();
        // Far more messages than slices: each is released when dropped.
        for _ in 0..20 {
            a.send(&[n], &[IoSlice::new(b"x")]).unwrap();
            drop(a.try_recv().unwrap());
        }
        // Two received messages hold two slices; a third is queued; a
        // fourth finds no room (1 left, already the sender's share).
        a.send(&[n], &[IoSlice::new(b"1")]).unwrap();
        let m1 = a.try_recv().unwrap();
        a.send(&[n], &[IoSlice::new(b"2")]).unwrap();
        let m2 = a.try_recv().unwrap();
        a.send(&[n], &[IoSlice::new(b"3")]).unwrap();
        assert_eq!(a.send(&[n], &[IoSlice::new(b"4")]), Err(Error::Quota));
        assert_eq!(payload(m1), b"1");
        assert_eq!(payload(m2), b"2");
        a.send(&[n], &[IoSlice::new(b"4")]).unwrap();
        assert_eq!(payload(a.try_recv().unwrap()), b"3");
        assert_eq!(payload(a.try_recv().unwrap()), b"4");
    }

    fn a_send_to_several_own_nodes_is_one_transaction(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let h1 = c.handle_from(&a, node(0x4)).unwrap();
        let h2 = c.handle_from(&a, node(0x8)).unwrap();
        c.send(&[h1, h2], &[IoSlice::new(b"both")]).unwrap();
        let x = a.try_recv().unwrap();
        let y = a.try_recv().unwrap();
        match (&x, &y) {
            (Event::Message(x), Event::Message(y)) => {
                assert!(x.more() && !y.more());
                assert_eq!((x.destination(), y.destination()), (node(0x4), node(0x8)));
            }
            other => panic!("{other:?}"),
        }
    }

    fn send_errors_change_nothing(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let to_a = c.handle_from(&a, node(0x100)).unwrap();
        let hi = [IoSlice::new(b"hi")];
        assert_eq!(c.send(&[to_a, to_a], &hi), Err(Error::NotUnique));
        assert_eq!(c.send(&[HandleId::from_raw(0x1003)], &hi), Err(Error::NoSuchHandle));
        assert_eq!(c.message().to(&[to_a]).handles(&[HandleId::from_raw(0x7)]).send(), Err(Error::NoSuchHandle));
        let null = std::fs::File::open("/dev/null").unwrap();
        let many = vec![null.as_fd(); 257];
        assert_eq!(c.message().to(&[to_a]).fds(&many).send(), Err(Error::TooLarge));
        assert_eq!(c.message().to(&[to_a]).fds(&[a.as_fd()]).send(), Err(Error::NotSupported));
        assert_eq!(c.message().to(&[to_a]).payload(&hi).set_seed(), Err(Error::Invalid));
        assert_eq!(a.try_recv().err(), Some(Error::Again), "nothing was delivered");
    }

    fn continue_reports_each_destination(b: Backend) {
        let (a, mut gone, mut full) = (open(&b), open(&b), open(&b));
        let to_gone = a.handle_from(&gone, node(0x4)).unwrap();
        let to_full = a.handle_from(&full, node(0x4)).unwrap();
        full.reset(&Reset::new().max_slices(0)).unwrap();
        gone.disconnect().unwrap();
        match a.try_recv().unwrap() {
            Event::NodeDestroy { handle, .. } => assert_eq!(handle, to_gone),
            other => panic!("{other:?}"),
        }
        let mine = node(0x8).into();
        let d = a.message().to(&[to_gone, mine, to_full]).payload(&[IoSlice::new(b"x")]).send_continue().unwrap();
        assert_eq!(d.results().collect::<Vec<_>>(), vec![Err(Error::Shutdown), Ok(()), Err(Error::Quota)]);
        assert_eq!(d.failures().map(|f| f.0).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(d.result(3), None);
        assert_eq!(payload(a.try_recv().unwrap()), b"x");
        // Without CONTINUE the same send delivers nowhere.
        assert_eq!(a.send(&[mine, to_gone], &[IoSlice::new(b"y")]), Err(Error::Shutdown));
        assert_eq!(a.try_recv().err(), Some(Error::Again));
        let all = a.message().to(&[mine]).payload(&[IoSlice::new(b"z")]).send_continue().unwrap();
        assert!(all.all_delivered());
        drop(full);
    }

    fn handles_travel_and_are_released(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let to_a = c.handle_from(&a, node(0x100)).unwrap();
        assert!(to_a.is_remote() && to_a.is_managed());
        // `c` sends a handle on its own node 0x200 along; `a` replies on it.
        c.message().to(&[to_a]).payload(&[IoSlice::new(b"q")]).handles(&[node(0x200).into(), HandleId::from(node(0x200))]).send().unwrap();
        let reply = match a.try_recv().unwrap() {
            Event::Message(m) => {
                let hs: Vec<_> = m.handles().collect();
                assert_eq!(hs.len(), 2);
                assert_eq!(hs[0], hs[1], "one handle per node");
                hs[0].unwrap()
            }
            other => panic!("{other:?}"),
        };
        a.send(&[reply], &[IoSlice::new(b"r")]).unwrap();
        assert_eq!(payload(c.try_recv().unwrap()), b"r");
        // Two references from the message: two releases, then it is gone.
        a.release(reply).unwrap();
        a.release(reply).unwrap();
        assert_eq!(a.release(reply), Err(Error::NoSuchHandle));
        assert_eq!(a.send(&[reply], &[]), Err(Error::NoSuchHandle));
        // The owner's last reference of a live node stays; an ID never
        // used is EBUSY too.
        assert_eq!(c.release(node(0x200).into()), Err(Error::Busy));
        assert_eq!(c.release(node(0x9990).into()), Err(Error::Busy));
    }

    fn notifications_of_destruction_and_release(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let n1 = node(0x10);
        let h = c.handle_from(&a, n1).unwrap();
        // The holder lets go: the owner learns that nobody else holds it.
        c.release(h).unwrap();
        match a.try_recv().unwrap() {
            Event::NodeRelease { node, more } => assert_eq!((node, more), (n1, false)),
            other => panic!("{other:?}"),
        }
        let h = c.handle_from(&a, n1).unwrap();
        let h2 = c.handle_from(&a, node(0x20)).unwrap();
        a.destroy(&[n1, node(0x20)], false).unwrap();
        let mut seen = vec![];
        for _ in 0..2 {
            match c.try_recv().unwrap() {
                Event::NodeDestroy { handle, more } => seen.push((handle, more)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, vec![(h, true), (h2, false)]);
        assert_eq!(c.send(&[h], &[]), Ok(()), "a destroyed node still takes messages (dropped)");
        assert_eq!(a.destroy(&[n1], false), Err(Error::Stale));
        assert_eq!(a.destroy(&[node(0x40), node(0x40)], false), Err(Error::NotUnique));
        assert_eq!(a.destroy(&[], false), Ok(()));
        // A transfer of a destroyed node gives no handle.
        assert_eq!(a.transfer(n1.into(), &c).unwrap(), None);
        assert_eq!(c.handle_from(&a, n1), Err(Error::Stale));
        // The owner may drop its last reference once the node is destroyed.
        a.release(n1.into()).unwrap();
        assert_eq!(a.release(n1.into()), Err(Error::Busy), "the ID is free again");
    }

    fn a_remote_handle_is_no_node(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let h = c.handle_from(&a, node(0x10)).unwrap();
        // Only an owner handle names a node: `destroy` cannot be handed a
        // remote one (the module's EREMOTE cannot be reached by type).
        assert_eq!(h.node(), None);
        assert_eq!(HandleId::from(node(0x10)).node(), Some(node(0x10)));
        assert_eq!(c.transfer(h, &c).unwrap(), Some(h), "a transfer to oneself gives the same ID");
        c.release(h).unwrap();
        c.release(h).unwrap();
        assert_eq!(c.release(h), Err(Error::NoSuchHandle));
    }

    fn disconnect_ends_everything(b: Backend) {
        let (mut a, c) = (open(&b), open(&b));
        let h = c.handle_from(&a, node(0x100)).unwrap();
        a.disconnect().unwrap();
        assert_eq!(a.try_recv().err(), Some(Error::Shutdown));
        assert_eq!(a.recv().err(), Some(Error::Shutdown));
        assert_eq!(a.query(), Err(Error::Shutdown));
        assert_eq!(a.send(&[node(4).into()], &[]), Err(Error::Shutdown));
        assert_eq!(a.disconnect(), Err(Error::Shutdown));
        assert_eq!(c.send(&[h], &[IoSlice::new(b"late")]), Err(Error::Shutdown));
        match c.try_recv().unwrap() {
            Event::NodeDestroy { handle, .. } => assert_eq!(handle, h),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.transfer(h, &a), Err(Error::Shutdown));
    }

    fn fds_travel_and_belong_to_the_receiver(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let to_a = c.handle_from(&a, node(0x100)).unwrap();
        let (input, mut output, mut cat) = relay();
        let file = std::fs::File::open("/dev/null").unwrap();
        c.message().to(&[to_a]).payload(&[IoSlice::new(b"pipe")]).fds(&[input.as_fd(), file.as_fd()]).send().unwrap();
        drop(input);
        let mut m = match a.try_recv().unwrap() {
            Event::Message(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(m.fds().len(), 2);
        let mut fds = m.take_fds();
        assert!(m.fds().is_empty());
        drop(m);
        let mut w = std::fs::File::from(fds.remove(0));
        w.write_all(b"through the bus").unwrap();
        drop(w);
        drop(fds);
        let mut got = vec![];
        output.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"through the bus");
        cat.wait().unwrap();
    }

    fn a_message_dropped_unread_closes_its_fds(b: Backend) {
        let a = open(&b);
        let (input, mut output, mut cat) = relay();
        a.message().to(&[node(4).into()]).fds(&[input.as_fd()]).send().unwrap();
        drop(input);
        drop(a.try_recv().unwrap());
        let mut buf = vec![];
        assert_eq!(output.read_to_end(&mut buf).unwrap(), 0, "every writer is closed");
        cat.wait().unwrap();
    }

    fn seeds_are_the_peers_own(b: Backend) {
        let a = open(&b);
        assert_eq!(a.recv_seed().err(), Some(Error::Again));
        a.message().payload(&[IoSlice::new(b"one")]).handles(&[node(0x40).into()]).set_seed().unwrap();
        a.message().payload(&[IoSlice::new(b"two")]).set_seed().unwrap();
        let s = a.recv_seed().unwrap();
        assert_eq!(s.payload(), b"two", "a seed replaces the one before");
        drop(s);
        assert_eq!(a.recv_seed().err(), Some(Error::Again));
        // The replaced seed held the only reference of node 0x40 besides
        // its owner's.
        match a.try_recv().unwrap() {
            Event::NodeRelease { node: n, .. } => assert_eq!(n, node(0x40)),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.try_recv().err(), Some(Error::Again), "a seed is not in the queue");
    }

    fn blocking_receives_wake_up(b: Backend) {
        let (a, c) = (open(&b), open(&b));
        let to_a = c.handle_from(&a, node(0x100)).unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(a.recv_timeout(Duration::from_millis(30)).err(), Some(Error::Again));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200u32 {
                    if i % 50 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    c.send(&[to_a], &[IoSlice::new(&i.to_le_bytes())]).unwrap();
                }
            });
            for i in 0..200u32 {
                assert_eq!(payload(a.recv().unwrap()), i.to_le_bytes());
            }
        });
    }

    fn the_final_abi_talks_to_v1_peers(b: Backend) {
        let fin = Peer::open_abi(b.clone(), Abi::Final).unwrap();
        let v1 = open(&b);
        assert_eq!(fin.abi(), Abi::Final);
        let to_fin = v1.handle_from(&fin, node(0x100)).unwrap();
        let to_v1 = fin.handle_from(&v1, node(0x100)).unwrap();
        v1.message().to(&[to_fin]).payload(&[IoSlice::new(b"v1 to final")]).handles(&[node(0x8).into()]).send().unwrap();
        match fin.recv().unwrap() {
            Event::Message(m) => {
                assert_eq!(m.payload(), b"v1 to final");
                assert_eq!(m.sender(), None, "the final RECV reports no sender");
                assert!(m.handles().next().unwrap().unwrap().is_remote());
            }
            other => panic!("{other:?}"),
        }
        fin.send(&[to_v1], &[IoSlice::new(b"final to v1")]).unwrap();
        match v1.recv().unwrap() {
            Event::Message(m) => {
                assert_eq!(m.payload(), b"final to v1");
                assert!(m.sender().is_some());
            }
            other => panic!("{other:?}"),
        }
        let mut fin = fin;
        fin.reset(&Reset::new().flush().max_slices(9)).unwrap();
        assert_eq!(fin.query().unwrap().max_slices, 9);
    }

    fn a_peer_fd_can_be_taken_over(b: Backend) {
        let a = open(&b);
        let copy = a.as_fd().try_clone_to_owned().unwrap();
        let same = Peer::from_fd(copy, a.is_embedded(), Abi::V1).unwrap();
        a.send(&[node(4).into()], &[IoSlice::new(b"to myself")]).unwrap();
        assert_eq!(payload(same.try_recv().unwrap()), b"to myself");
        // Something that is not a peer.
        let file = std::fs::File::open("/dev/null").unwrap();
        if a.is_embedded() {
            assert_eq!(Peer::from_fd(file.into(), true, Abi::V1).err(), Some(Error::NotSupported));
        } else {
            // The device backend maps the pool: a plain file has none of
            // the peer's.
            let other = Peer::from_fd(file.into(), false, Abi::V1);
            if let Ok(p) = other {
                assert!(p.query().is_err());
            }
        }
    }

    fn a_transfer_to_a_non_peer_is_refused(b: Backend) {
        let a = open(&b);
        let c = open(&b);
        let h = c.handle_from(&a, node(0x10)).unwrap();
        assert!(h.is_remote());
        assert_eq!(a.transfer(HandleId::from_raw(0x1b), &c), Err(Error::NoSuchHandle));
    }
}

#[test]
fn opening_a_missing_device_is_not_found() {
    if common::under_shim() {
        return;
    }
    let e = Peer::open(Backend::Device("/nonexistent/bus1".into())).unwrap_err();
    assert_eq!(e, Error::NotFound);
    assert_eq!(e.errno(), libc::ENOENT);
}
