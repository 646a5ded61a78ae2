//! `bus1ctl`: shows, checks and cleans up a bus1 domain.
//!
//! ```text
//! bus1ctl [--json] status [DOMAIN]   peers, queues, pools, quotas, nodes, handles
//! bus1ctl [--json] check [DOMAIN]    verify the segment's invariants
//! bus1ctl [--json] gc [DOMAIN]       tear down dead peers, remove leftovers
//! ```
//!
//! DOMAIN defaults to what the shim would use: `$BUS1_DOMAIN`, else the
//! per-user default directory. No command creates a domain; `status` and
//! `check` change nothing and hold the domain lock only while they copy
//! the state (see `shm_core::Snapshot`), never while printing. The manual
//! is docs/man/bus1ctl.1.

mod json;
mod owners;
mod report;

use shm_core::{Domain, Errno};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: bus1ctl [--json] status|check|gc [DOMAIN]
  status  list the domain's peers (serial, processes holding them, queue,
          pool, quotas), its nodes and the handles held on them
  check   verify the domain's invariants; exit status 1 on a violation
  gc      tear down peers whose last fd is gone and remove the files
          that killed processes left
  --json  machine-readable output
DOMAIN defaults to $BUS1_DOMAIN, else the shim's per-user default.";

/// Exit statuses (see bus1ctl(1)).
const EXIT_VIOLATION: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NO_DOMAIN: u8 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Status,
    Check,
    Gc,
}

struct Args {
    command: Command,
    json: bool,
    domain: PathBuf,
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut json = false;
    let mut words = Vec::new();
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => return Ok(None),
            "--version" => {
                println!("bus1ctl {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => words.push(s),
        }
    }
    let command = match words.first() {
        Some(&"status") => Command::Status,
        Some(&"check") => Command::Check,
        Some(&"gc") => Command::Gc,
        Some(w) => return Err(format!("unknown command {w}")),
        None => return Err("no command given".into()),
    };
    if words.len() > 2 {
        return Err("too many arguments".into());
    }
    let domain = words.get(1).map_or_else(shm_core::configured_dir, PathBuf::from);
    Ok(Some(Args { command, json, domain }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            if !args.iter().any(|a| a == "--version") {
                println!("{USAGE}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bus1ctl: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let dom = match Domain::open_existing(&args.domain) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bus1ctl: {}: {}", args.domain.display(), why_not_a_domain(e));
            return ExitCode::from(EXIT_NO_DOMAIN);
        }
    };
    match args.command {
        Command::Status => match dom.snapshot() {
            Ok(snap) => {
                // Looked up after the lock was released: the processes
                // holding each peer, and which peers' last fd is gone.
                let seen = report::Seen {
                    holders: owners::holders(&snap.peers.iter().map(|p| p.socket.clone()).collect::<Vec<_>>()),
                    gone: snap.peers.iter().filter(|p| !dom.peer_socket_alive(p.serial)).map(|p| p.serial).collect(),
                };
                let out = if args.json { report::status_json(&snap, &seen).render() } else { report::status_text(&snap, &seen) };
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bus1ctl: {}: cannot read the domain: {}", args.domain.display(), std::io::Error::from_raw_os_error(e.0));
                ExitCode::from(EXIT_NO_DOMAIN)
            }
        },
        Command::Check => {
            let violations = dom.check_invariants();
            let out = if args.json { report::check_json(dom.dir(), &violations).render() } else { report::check_text(dom.dir(), &violations) };
            print!("{out}");
            if violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_VIOLATION)
            }
        }
        Command::Gc => {
            let gc = report::Gc {
                peers_torn_down: dom.reap_dead_peers() as u64,
                files_removed: dom.sweep_files() as u64,
                pool_bytes_released: dom.sweep_pools(),
                // No process uses it and no peer socket is open: nothing
                // can use its memory again (what the last process to
                // leave normally would have removed).
                memory_removed: dom.leave(),
            };
            let out = if args.json { report::gc_json(dom.dir(), &gc).render() } else { report::gc_text(dom.dir(), &gc) };
            print!("{out}");
            ExitCode::SUCCESS
        }
    }
}

/// Why `open_existing` refused, in words.
fn why_not_a_domain(e: Errno) -> String {
    match e {
        Errno::ENOENT => "no bus1 domain here (nothing is created by bus1ctl)".into(),
        Errno::ENODEV => "not a domain of this version of bus1 (uninitialised, or another layout)".into(),
        // A directory or file another user could control (see the trust
        // boundary in docs/design.md), with the reason.
        Errno::EPERM => match shm_core::take_refusal() {
            Some(why) => format!("refused: {why}"),
            None => "permission denied".into(),
        },
        Errno::EACCES => "permission denied (a private domain belongs to the user who made it)".into(),
        e => format!("cannot open the domain: {}", std::io::Error::from_raw_os_error(e.0)),
    }
}
