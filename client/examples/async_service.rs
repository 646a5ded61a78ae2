//! A small request/reply service on tokio: the service task awaits
//! requests and answers each on the handle it carried; several client
//! tasks ask concurrently.
//!
//! cargo run -p bus1 --example async_service [-- --device]

#[path = "common/mod.rs"]
mod common;

use bus1::{AsyncPeer, Event, NodeId, Peer};
use std::io::IoSlice;

#[tokio::main]
async fn main() -> bus1::Result<()> {
    let service = AsyncPeer::new(Peer::open(common::backend())?)?;
    let node = NodeId::new(0x100).unwrap();

    let mut clients = vec![];
    for i in 0..4u64 {
        let client = AsyncPeer::new(Peer::open(common::backend())?)?;
        let to_service = client.handle_from(&service, node)?;
        clients.push(tokio::spawn(async move {
            let reply_node = NodeId::new(0x1000 + i * 4).unwrap();
            let mut sum = 0u64;
            for n in 1..=10u64 {
                let req = (i * 100 + n).to_le_bytes();
                client.message().to(&[to_service]).payload(&[IoSlice::new(&req)]).handles(&[reply_node.into()]).send()?;
                if let Event::Message(m) = client.recv().await? {
                    sum += u64::from_le_bytes(m.payload().try_into().expect("8 bytes"));
                }
            }
            Ok::<_, bus1::Error>((i, sum))
        }));
    }

    let server = tokio::spawn(async move {
        // Answers each request with its number doubled.
        for _ in 0..40 {
            if let Event::Message(m) = service.recv().await? {
                let n = u64::from_le_bytes(m.payload().try_into().expect("8 bytes"));
                let reply_to = m.handles().next().flatten().expect("a reply handle");
                service.send(&[reply_to], &[IoSlice::new(&(n * 2).to_le_bytes())])?;
                service.release(reply_to)?;
            }
        }
        Ok::<_, bus1::Error>(())
    });

    for c in clients {
        let (i, sum) = c.await.expect("client task")?;
        println!("client {i}: sum of replies {sum}");
    }
    server.await.expect("service task")?;
    Ok(())
}
