//! An optional count of what one operation touches in the domain segment:
//! the distinct 64-byte cache lines it reads or writes (records, locks,
//! undo log; not pool payload) and the undo entries it writes. It backs the
//! per-message figures in the README (`examples/census.rs`). Built only
//! with the `census` feature; without it every hook is an empty inline
//! function.

#[cfg(feature = "census")]
mod imp {
    use std::cell::{Cell, RefCell};
    use std::collections::HashSet;

    thread_local! {
        static LINES: RefCell<Option<HashSet<usize>>> = const { RefCell::new(None) };
        static UNDO: Cell<u64> = const { Cell::new(0) };
    }

    pub fn touch(addr: usize, len: usize) {
        LINES.with(|l| {
            if let Some(set) = l.borrow_mut().as_mut() {
                let first = addr >> 6;
                let last = (addr + len.max(1) - 1) >> 6;
                for line in first..=last {
                    set.insert(line);
                }
            }
        });
    }

    pub fn undo_entry() {
        UNDO.with(|u| u.set(u.get() + 1));
    }

    pub fn start() {
        LINES.with(|l| *l.borrow_mut() = Some(HashSet::new()));
        UNDO.with(|u| u.set(0));
    }

    pub fn stop() -> super::Census {
        let lines = LINES.with(|l| l.borrow_mut().take().map_or(0, |s| s.len() as u64));
        super::Census { lines, undo: UNDO.with(|u| u.get()) }
    }
}

/// What one measured stretch touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Distinct segment cache lines read or written.
    pub lines: u64,
    /// Undo entries written.
    pub undo: u64,
}

/// Records an access to `len` bytes of the segment at `addr`.
#[inline(always)]
pub(crate) fn touch(_addr: usize, _len: usize) {
    #[cfg(feature = "census")]
    imp::touch(_addr, _len);
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
