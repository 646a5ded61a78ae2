//! An optional count of what one operation touches in the domain segment:
//! the distinct 64-byte cache lines it reads or writes (records, locks,
//! undo log; not pool payload), which of them it writes, and the undo
//! entries it writes. It backs the per-message figures in the README
//! (`examples/census.rs`). Built only with the `census` feature; without
//! it every hook is an empty inline function.

#[cfg(feature = "census")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    thread_local! {
        /// Lines touched so far, each with whether it was written.
        static LINES: RefCell<Option<HashMap<usize, bool>>> = const { RefCell::new(None) };
        static UNDO: Cell<u64> = const { Cell::new(0) };
    }

    pub fn touch(addr: usize, len: usize, write: bool) {
        LINES.with(|l| {
            if let Some(map) = l.borrow_mut().as_mut() {
                let first = addr >> 6;
                let last = (addr + len.max(1) - 1) >> 6;
                for line in first..=last {
                    *map.entry(line).or_insert(false) |= write;
                }
            }
        });
    }

    pub fn undo_entry() {
        UNDO.with(|u| u.set(u.get() + 1));
    }

    pub fn start() {
        LINES.with(|l| *l.borrow_mut() = Some(HashMap::new()));
        UNDO.with(|u| u.set(0));
    }

    pub fn stop() -> super::Census {
        let touched = LINES.with(|l| l.borrow_mut().take()).unwrap_or_default();
        super::Census { undo: UNDO.with(|u| u.get()), touched }
    }
}

/// What one measured stretch touched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Undo entries written.
    pub undo: u64,
    /// The lines (address / 64), each with whether it was written.
    pub touched: std::collections::HashMap<usize, bool>,
}

impl Census {
    /// Distinct segment cache lines read or written.
    pub fn lines(&self) -> u64 {
        self.touched.len() as u64
    }

    /// The lines this stretch and `other` both touch and at least one of
    /// them writes: the lines that move between two CPUs when the two
    /// stretches run there in turn (a sender's SEND and the receiver's
    /// RECV, say).
    pub fn moved_with(&self, other: &Census) -> u64 {
        self.touched.iter().filter(|&(line, &w)| other.touched.get(line).is_some_and(|&ow| w || ow)).count() as u64
    }

    /// Both stretches' lines together.
    pub fn joined(mut self, other: &Census) -> Census {
        for (&line, &w) in &other.touched {
            *self.touched.entry(line).or_insert(false) |= w;
        }
        self.undo += other.undo;
        self
    }
}

/// Records a read of `len` bytes of the segment at `addr`.
#[inline(always)]
pub(crate) fn touch(_addr: usize, _len: usize) {
    #[cfg(feature = "census")]
    imp::touch(_addr, _len, false);
}

/// Records a write (or read-modify-write) of `len` bytes at `addr`.
#[inline(always)]
pub(crate) fn write(_addr: usize, _len: usize) {
    #[cfg(feature = "census")]
    imp::touch(_addr, _len, true);
}

/// Records one undo entry.
#[inline(always)]
pub(crate) fn undo_entry() {
    #[cfg(feature = "census")]
    imp::undo_entry();
}

/// Starts counting on this thread.
#[cfg(feature = "census")]
pub fn start() {
    imp::start();
}

/// Stops counting on this thread and returns the counts.
#[cfg(feature = "census")]
pub fn stop() -> Census {
    imp::stop()
}
