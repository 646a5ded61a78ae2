//! File-descriptor passing: a client sends the write end of a pipe (here
//! the stdin of a `cat` child) with a request; the service writes its
//! answer straight into it.
//!
//! cargo run -p bus1 --example fdpass [-- --device]

#[path = "common/mod.rs"]
mod common;

use bus1::{Event, NodeId, Peer};
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

fn main() -> bus1::Result<()> {
    let service = Peer::open(common::backend())?;
    let client = Peer::open(common::backend())?;
    let to_service = client.handle_from(&service, NodeId::new(0x100).unwrap())?;

    let mut cat = Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let pipe_in = cat.stdin.take().expect("stdin");
    client.message().to(&[to_service]).payload(&[IoSlice::new(b"write here")]).fds(&[pipe_in.as_fd()]).send()?;
    // The client's own copy is not needed any more.
    drop(pipe_in);

    if let Event::Message(mut m) = service.recv()? {
        println!("service got {:?} with {} fd(s)", String::from_utf8_lossy(m.payload()), m.fds().len());
        let mut out = std::fs::File::from(m.take_fds().remove(0));
        out.write_all(b"written by the service through a passed fd\n")?;
    }
    let mut text = String::new();
    cat.stdout.take().expect("stdout").read_to_string(&mut text)?;
    print!("client read: {text}");
    cat.wait()?;
    Ok(())
}
