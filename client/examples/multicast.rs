//! Multicast fan-out: one SEND reaches several subscribers at once, in one
//! transaction; a subscriber that went away is reported per destination
//! (CONTINUE) while the others still get the message.
//!
//! cargo run -p bus1 --example multicast [-- --device]

#[path = "common/mod.rs"]
mod common;

use bus1::{Event, NodeId, Peer};
use std::io::IoSlice;

fn main() -> bus1::Result<()> {
    let publisher = Peer::open(common::backend())?;
    let mut subscribers = (0..4).map(|_| Peer::open(common::backend())).collect::<bus1::Result<Vec<_>>>()?;
    let node = NodeId::new(0x100).unwrap();
    let handles = subscribers.iter().map(|s| publisher.handle_from(s, node)).collect::<bus1::Result<Vec<_>>>()?;

    publisher.send(&handles, &[IoSlice::new(b"news for everyone")])?;
    for (i, s) in subscribers.iter().enumerate() {
        if let Event::Message(m) = s.recv()? {
            println!("subscriber {i}: {}", String::from_utf8_lossy(m.payload()));
        }
    }

    // One subscriber leaves; the rest still get the next message.
    subscribers[2].disconnect()?;
    let d = publisher.message().to(&handles).payload(&[IoSlice::new(b"second edition")]).send_continue()?;
    for (i, e) in d.failures() {
        println!("subscriber {i} did not get it: {e}");
    }
    for (i, s) in subscribers.iter().enumerate().filter(|(i, _)| *i != 2) {
        if let Event::Message(m) = s.recv()? {
            println!("subscriber {i}: {}", String::from_utf8_lossy(m.payload()));
        }
    }
    Ok(())
}
