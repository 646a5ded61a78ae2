//! An echo service: one thread owns a node and sends every message back
//! to the handle that came with it; a client asks a few times.
//!
//! cargo run -p bus1 --example echo [-- --device]

#[path = "common/mod.rs"]
mod common;

use bus1::{Event, NodeId, Peer};
use std::io::IoSlice;

fn main() -> bus1::Result<()> {
    let service = Peer::open(common::backend())?;
    let client = Peer::open(common::backend())?;
    // The client learns of the service's node (a real program would get
    // this handle in a message, or from its seed).
    let to_service = client.handle_from(&service, NodeId::new(0x100).unwrap())?;

    let server = std::thread::spawn(move || -> bus1::Result<()> {
        loop {
            match service.recv()? {
                Event::Message(m) => {
                    let Some(Some(reply_to)) = m.handles().next() else { continue };
                    if m.payload() == b"bye" {
                        return Ok(());
                    }
                    service.send(&[reply_to], &[IoSlice::new(m.payload())])?;
                    // The reference the message gave us.
                    service.release(reply_to)?;
                }
                Event::NodeDestroy { .. } | Event::NodeRelease { .. } => {}
            }
        }
    });

    let reply_node = NodeId::new(0x200).unwrap();
    for text in ["hello", "bus1", "from Rust"] {
        client.message().to(&[to_service]).payload(&[IoSlice::new(text.as_bytes())]).handles(&[reply_node.into()]).send()?;
        match client.recv()? {
            Event::Message(m) => println!("echo: {}", String::from_utf8_lossy(m.payload())),
            other => println!("unexpected: {other:?}"),
        }
    }
    client.message().to(&[to_service]).payload(&[IoSlice::new(b"bye")]).handles(&[reply_node.into()]).send()?;
    server.join().expect("the service thread")?;
    Ok(())
}
