//! The segment heap: power-of-two size classes with free lists, carved from
//! a bump pointer. Every change to the free lists and the bump pointer goes
//! through the transaction, so an aborted or crashed transaction leaks
//! nothing. Freed blocks return to their list only at commit (txn rule 3).

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::txn::Txn;

const MIN_SHIFT: u32 = 4;

/// Size class and block size of a request.
fn class_of(size: u64) -> (usize, u64) {
    let size = size.max(1 << MIN_SHIFT);
    let shift = 64 - (size - 1).leading_zeros();
    ((shift - MIN_SHIFT) as usize, 1u64 << shift)
}

/// Allocates a zeroed block of at least `size` bytes.
pub fn alloc(tx: &Txn, size: u64) -> Result<u64> {
    tx.log_ok()?;
    let (class, bsize) = class_of(size);
    if class >= NCLASSES {
        return Err(Errno::ENOMEM);
    }
    let hdr = tx.hdr();
    let seg = &tx.dom.seg;
    let head = hdr.free_heads[class].get();
    let off = if head != 0 {
        let link = &seg.cells(head, 1)[0];
        let next = link.get();
        tx.set(&hdr.free_heads[class], next);
        // The link word belongs to committed state (the free list): log it
        // before the block is zeroed and initialised without logging, so
        // that an abort puts it back (even when it is 0, the list's end).
        tx.preserve(link);
        head
    } else {
        let align = bsize.min(4096);
        let off = hdr.heap_top.get().div_ceil(align) * align;
        let end = off.checked_add(bsize).ok_or(Errno::ENOMEM)?;
        if end > SEG_SIZE {
            return Err(Errno::ENOMEM);
        }
        reserve(tx, end)?;
        tx.set(&hdr.heap_top, end);
        off
    };
    // Apart from its (logged) link word, a block taken from a free list
    // holds nothing committed, and one from the bump pointer was never
    // used: both are fresh memory.
    seg.zero(off, bsize as usize);
    tx.note_fresh(off, bsize);
    tx.add(&hdr.live_blocks, 1);
    tx.add(&hdr.live_bytes, bsize as i64);
    Ok(off)
}

/// Frees a block at commit.
pub fn free(tx: &Txn, off: u64, size: u64) {
    tx.defer_free(off, size);
}

/// Returns a block to its free list (called by the commit).
pub(crate) fn free_now(tx: &Txn, off: u64, size: u64) {
    let (class, bsize) = class_of(size);
    let hdr = tx.hdr();
    let link = &tx.dom.seg.cells(off, 1)[0];
    tx.set(link, hdr.free_heads[class].get());
    tx.set(&hdr.free_heads[class], off);
    tx.add(&hdr.live_blocks, -1);
    tx.add(&hdr.live_bytes, -(bsize as i64));
}

/// Checks every free list (alignment, bounds, no cycles); describes the
/// first damage found.
pub fn check_free_lists(tx: &Txn) -> core::result::Result<(), String> {
    let hdr = tx.hdr();
    let top = hdr.heap_top.get();
    for class in 0..NCLASSES {
        let bsize = 1u64 << (class as u32 + MIN_SHIFT);
        let mut b = hdr.free_heads[class].get();
        let mut n = 0u64;
        while b != 0 {
            if b % bsize.min(4096) != 0 || b < HEAP_OFF || b + bsize > top {
                return Err(format!("bad free block {b:#x} in class {class} at position {n}"));
            }
            b = tx.dom.seg.cells(b, 1)[0].get();
            n += 1;
            if n > top / bsize {
                return Err(format!("cycle in free list of class {class}"));
            }
        }
    }
    Ok(())
}

/// Makes sure the heap up to `end` is backed by allocated file space, so
/// that later writes cannot fault on a full filesystem.
fn reserve(tx: &Txn, end: u64) -> Result<()> {
    let hdr = tx.hdr();
    let have = hdr.heap_reserved.get().max(HEAP_OFF);
    if end <= have {
        return Ok(());
    }
    let want = end.div_ceil(HEAP_CHUNK) * HEAP_CHUNK;
    tx.dom.reserve(have, want - have)?;
    tx.set(&hdr.heap_reserved, want);
    Ok(())
}

/// Makes sure the record at `off` of the wake-up tables (which are not
/// part of the heap) is backed by file space, as `reserve` does for the
/// heap.
pub(crate) fn reserve_table(tx: &Txn, off: u64) -> Result<()> {
    debug_assert!((WAKE_OFF..HEAP_OFF).contains(&off));
    let chunk = (off - WAKE_OFF) / WAKE_CHUNK;
    let word = &tx.hdr().wake_reserved[(chunk / 64) as usize];
    if word.get() & 1 << (chunk % 64) != 0 {
        return Ok(());
    }
    tx.dom.reserve(WAKE_OFF + chunk * WAKE_CHUNK, WAKE_CHUNK)?;
    tx.set(word, word.get() | 1 << (chunk % 64));
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::class_of;

    #[test]
    fn classes_are_powers_of_two() {
        assert_eq!(class_of(1), (0, 16));
        assert_eq!(class_of(16), (0, 16));
        assert_eq!(class_of(17), (1, 32));
        assert_eq!(class_of(4096), (8, 4096));
        assert_eq!(class_of(4097), (9, 8192));
    }
}
