//! Both backends and C programs on one bus: device and embedded peers in
//! one shimmed process, and three processes — this one (embedded, no
//! shim), a Rust program on the device backend under the shim, and a C
//! program under the shim — in one domain.

mod common;

use bus1::{Backend, Error, Event, HandleId, NodeId, Peer, ScratchDomain};
use common::{payload, shim, shimmed_test, under_shim};
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn node(id: u64) -> NodeId {
    NodeId::new(id).unwrap()
}

#[test]
fn device_and_embedded_peers_in_one_process() {
    if !under_shim() {
        return common::run_under_shim("device_and_embedded_peers_in_one_process");
    }
    // The shim serves the device in BUS1_DOMAIN; the linked-in engine
    // attaches the same domain.
    let dev = Peer::open(Backend::device()).unwrap();
    let emb = Peer::open(Backend::embedded()).unwrap();
    assert!(!dev.is_embedded() && emb.is_embedded());
    // A transfer made by the engine to a device peer, and by the shim to
    // an embedded one.
    let to_emb = dev.handle_from(&emb, node(0x100)).unwrap();
    let to_dev = emb.handle_from(&dev, node(0x200)).unwrap();
    dev.message().to(&[to_emb]).payload(&[IoSlice::new(b"device to embedded")]).handles(&[node(0x300).into()]).send().unwrap();
    let back = match emb.recv_timeout(Duration::from_secs(10)).unwrap() {
        Event::Message(m) => {
            assert_eq!(m.payload(), b"device to embedded");
            m.handles().next().unwrap().unwrap()
        }
        other => panic!("{other:?}"),
    };
    emb.send(&[to_dev, back], &[IoSlice::new(b"embedded to device")]).unwrap();
    for want in [node(0x200), node(0x300)] {
        match dev.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Message(m) => {
                assert_eq!(m.payload(), b"embedded to device");
                assert_eq!(m.destination(), want);
            }
            other => panic!("{other:?}"),
        }
    }
    // Both on one tokio runtime: a ping-pong, each side awaiting.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let dev = std::sync::Arc::new(bus1::AsyncPeer::new(dev).unwrap());
        let emb = bus1::AsyncPeer::new(emb).unwrap();
        let echo = {
            let dev = dev.clone();
            tokio::spawn(async move {
                for i in 0..2000u32 {
                    let got = payload(dev.recv().await.unwrap());
                    assert_eq!(got, i.to_le_bytes());
                    dev.send(&[to_emb], &[IoSlice::new(&got)]).unwrap();
                }
            })
        };
        for i in 0..2000u32 {
            emb.send(&[to_dev], &[IoSlice::new(&i.to_le_bytes())]).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), emb.recv()).await.expect("no lost wake-up");
            assert_eq!(payload(got.unwrap()), i.to_le_bytes());
        }
        echo.await.unwrap();
    });
}

#[test]
fn an_embedded_waiter_outlives_the_shims_ticks() {
    if !under_shim() {
        return common::run_under_shim("an_embedded_waiter_outlives_the_shims_ticks");
    }
    // The shim's watcher frees the waiter slots of dead process images
    // every few ticks of 40 ms. The engine linked in here is another copy
    // in the same process: its waiters must not look dead to the shim's.
    let dev = Peer::open(Backend::device()).unwrap();
    let emb = Peer::open(Backend::embedded()).unwrap();
    let to_emb = dev.handle_from(&emb, node(0x100)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let emb = bus1::AsyncPeer::new(emb).unwrap();
        for round in 0..3u8 {
            let sender = std::thread::spawn({
                let fd = dev.as_fd().try_clone_to_owned().unwrap();
                move || {
                    let dev = Peer::from_fd(fd, false, bus1::Abi::V1).unwrap();
                    // Long enough for several of the shim's collections.
                    std::thread::sleep(Duration::from_millis(400));
                    dev.send(&[to_emb], &[IoSlice::new(&[round])]).unwrap();
                }
            });
            let got = tokio::time::timeout(Duration::from_secs(10), emb.recv()).await.expect("the ring reached the waiter");
            assert_eq!(payload(got.unwrap()), [round]);
            sender.join().unwrap();
        }
    });
}

/// The Rust program of the three-way test, on the device backend under
/// the shim, with a peer fd on its standard input (it does nothing when
/// run otherwise).
#[test]
fn three_way_device_child() {
    let Some(home) = std::env::var("THREE_WAY_HOME").ok().filter(|_| under_shim()) else { return };
    let home = HandleId::from_raw(u64::from_str_radix(&home, 16).unwrap());
    let d = Peer::from_fd(std::io::stdin().as_fd().try_clone_to_owned().unwrap(), false, bus1::Abi::V1).unwrap();
    // A peer of its own, opened through the shim.
    let d2 = Peer::open(Backend::device()).unwrap();
    let h = d.handle_from(&d2, node(0x200)).unwrap();
    d.message().to(&[home]).payload(&[IoSlice::new(b"from device")]).handles(&[h]).send().unwrap();
    let got = payload(d2.recv_timeout(Duration::from_secs(20)).unwrap());
    let reply = [b"device got: ".as_slice(), &got].concat();
    d.send(&[home], &[IoSlice::new(&reply)]).unwrap();
}

/// Builds the C side with the system's C compiler against our header.
fn build_c_program(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("three_way");
    let st = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-O1", "-Wall", "-Werror", "-I"])
        .arg(root.join("../uapi/include"))
        .arg("-o")
        .arg(&out)
        .arg(root.join("tests/c/three_way.c"))
        .status()
        .expect("run the C compiler");
    assert!(st.success(), "compiling tests/c/three_way.c failed");
    out
}

#[test]
fn three_processes_three_ways_one_domain() {
    if under_shim() {
        return;
    }
    let scratch = ScratchDomain::new().unwrap();
    let build = ScratchDomain::new().unwrap();
    let c_program = build_c_program(build.path());
    // This process: embedded, no shim.
    let e = Peer::open(scratch.backend()).unwrap();
    // The other two processes' peers, made here so that handles can be
    // handed out; each child gets its fd on its standard input.
    let d = Peer::open(scratch.backend()).unwrap();
    let c = Peer::open(scratch.backend()).unwrap();
    let e_for_d = d.handle_from(&e, node(0x100)).unwrap();
    let e_for_c = c.handle_from(&e, node(0x100)).unwrap();
    let c_for_e = e.handle_from(&c, node(0x300)).unwrap();

    let mut c_child = Command::new(&c_program)
        .arg(format!("{:x}", e_for_c.raw()))
        .env("LD_PRELOAD", shim())
        .env("BUS1_DOMAIN", scratch.path())
        .stdin(Stdio::from(c.as_fd().try_clone_to_owned().unwrap()))
        .spawn()
        .expect("start the C program");
    let d_child = shimmed_test("three_way_device_child", scratch.path())
        .env("THREE_WAY_HOME", format!("{:x}", e_for_d.raw()))
        .stdin(Stdio::from(d.as_fd().try_clone_to_owned().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the device child");
    drop((c, d));

    // The device child's own peer, handed over in a message; passed on to
    // the C program, which writes to it.
    let to_d2 = match e.recv_timeout(Duration::from_secs(20)).unwrap() {
        Event::Message(m) => {
            assert_eq!(m.payload(), b"from device");
            m.handles().next().unwrap().expect("a live node")
        }
        other => panic!("{other:?}"),
    };
    e.message().to(&[c_for_e]).payload(&[IoSlice::new(b"forward")]).handles(&[to_d2]).send().unwrap();
    let mut got = vec![];
    while got.len() < 2 {
        match e.recv_timeout(Duration::from_secs(20)) {
            Ok(Event::Message(m)) => got.push(String::from_utf8_lossy(m.payload()).into_owned()),
            // The children's peers going away.
            Ok(Event::NodeRelease { .. }) | Ok(Event::NodeDestroy { .. }) => {}
            Err(Error::Again) => panic!("timed out; so far {got:?}"),
            Err(err) => panic!("{err}"),
        }
    }
    got.sort();
    assert_eq!(got, ["C done", "device got: from C"]);
    assert!(c_child.wait().unwrap().success(), "the C program failed");
    let out = d_child.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the device child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
