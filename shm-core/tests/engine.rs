//! The engine driven directly (no preload): messages, handles, nodes,
//! notifications, quotas, pools and readiness, in one process.

mod common;
use common::*;
use shm_core::Errno;
use uapi::*;

#[test]
fn unicast_roundtrip_and_readiness() {
    let bus = Bus::new("unicast");
    let a = bus.peer();
    let b = bus.peer();
    let id_b = a.transfer(0x100, &b).unwrap_or_else(|e| panic!("{e}"));
    // a created node 0x100; b gets the first remote ID
    assert_eq!(id_b, 0xB);
    assert!(!a.readable());
    b.send(&[id_b], b"hello").unwrap();
    assert!(a.readable());
    let m = a.recv().unwrap();
    assert_eq!(m.m.r#type, BUS1_MSG_DATA);
    assert_eq!(m.m.destination, 0x100);
    assert_eq!(m.payload, b"hello");
    assert_eq!(m.m.offset, 0);
    assert!(!a.readable());
    assert_eq!(a.recv().err(), Some(Errno::EAGAIN));
    a.slice_release(m.m.offset).unwrap();
    assert_eq!(a.slice_release(m.m.offset), Err(Errno::ENXIO));
}
