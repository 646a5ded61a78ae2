//! A multicast subscriber on tokio: subscribers await a publisher's
//! messages; the publisher's end of the feed (its node destroyed) reaches
//! them as a NODE_DESTROY.
//!
//! cargo run -p bus1 --example async_subscriber [-- --device]

#[path = "common/mod.rs"]
mod common;

use bus1::{AsyncPeer, Event, NodeId, Peer};
use std::io::IoSlice;

#[tokio::main]
async fn main() -> bus1::Result<()> {
    let publisher = Peer::open(common::backend())?;
    let feed = NodeId::new(0x100).unwrap();
    let mut handles = vec![];
    let mut tasks = vec![];
    for i in 0..3 {
        let sub = AsyncPeer::new(Peer::open(common::backend())?)?;
        // Each subscriber holds a handle on the feed (to hear of its end)
        // and the publisher one on the subscriber's inbox.
        sub.handle_from(&publisher, feed)?;
        handles.push(publisher.handle_from(&sub, NodeId::new(0x4).unwrap())?);
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            loop {
                match sub.recv().await? {
                    Event::Message(m) => {
                        got += 1;
                        println!("subscriber {i}: {}", String::from_utf8_lossy(m.payload()));
                    }
                    Event::NodeDestroy { .. } => return Ok::<_, bus1::Error>(got),
                    Event::NodeRelease { .. } => {}
                }
            }
        }));
    }
    for n in 1..=3 {
        let text = format!("update {n}");
        publisher.send(&handles, &[IoSlice::new(text.as_bytes())])?;
    }
    publisher.destroy(&[feed], false)?;
    for (i, t) in tasks.into_iter().enumerate() {
        println!("subscriber {i} saw {} updates before the feed ended", t.await.expect("task")?);
    }
    Ok(())
}
