//! Typed access to the shared domain segment.
//!
//! The segment is one file mapped `MAP_SHARED` by every process of a domain,
//! at a different address in each. Objects inside it refer to each other by
//! byte offset ([`P`]), never by pointer. Record fields are [`Cell`]s: they
//! can be read through a shared reference, and are written only through a
//! transaction (`Txn::set`), which is how the undo log sees every change.
//! This module is one of the few that contain `unsafe`.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::layout::{LOG_OFF, POOL_MAP_LEN, WAKE_OFF};
use crate::usermem::UserMem;

/// Plain data that may live in shared memory and be copied bit for bit.
///
/// # Safety
/// Every bit pattern must be a valid value, and the size must be 1, 2, 4
/// or 8 bytes (the undo log records old values in one `u64`).
pub unsafe trait Pod: Copy + 'static {
    fn to_bits(self) -> u64;
    fn from_bits(bits: u64) -> Self;
}

macro_rules! pod_int {
    ($($t:ty),*) => {$(
        // SAFETY: integers accept every bit pattern and are at most 8 bytes.
        unsafe impl Pod for $t {
            fn to_bits(self) -> u64 { self as u64 }
            fn from_bits(bits: u64) -> Self { bits as $t }
        }
    )*};
}
pod_int!(u8, u16, u32, u64, i32, i64);

/// A field of a shared record.
#[repr(transparent)]
pub struct Cell<T: Pod>(UnsafeCell<T>);

impl<T: Pod> Cell<T> {
    #[inline]
    pub fn get(&self) -> T {
        crate::census::touch(self.addr(), core::mem::size_of::<T>());
        // SAFETY: the cell lives in mapped memory for as long as `self` is
        // borrowed, and every bit pattern is a valid `T` (Pod).
        unsafe { self.0.get().read() }
    }

    /// Writes without logging. Only the transaction module and the
    /// recovery path may call this.
    #[inline]
    pub(crate) fn raw_set(&self, v: T) {
        crate::census::write(self.addr(), core::mem::size_of::<T>());
        // SAFETY: a cell is written only by the holder of the lock that
        // guards it (the domain lock, or its peer's lock for message
        // state; recovery holds them too), so no other thread or process
        // writes it concurrently; lock-free readers read it racily on
        // purpose (`load_racy`).
        unsafe { self.0.get().write(v) }
    }

    #[inline]
    pub(crate) fn addr(&self) -> usize {
        self.0.get() as usize
    }
}


impl Cell<u32> {
    /// Reads the field without the domain lock. The value may be stale;
    /// callers use it only as a hint and re-check under the lock.
    #[inline]
    pub fn load_racy(&self) -> u32 {
        crate::census::touch(self.addr(), 4);
        // SAFETY: the cell is 4-byte aligned memory that stays mapped; an
        // atomic load of it never tears, whatever a writer does meanwhile.
        unsafe { AtomicU32::from_ptr(self.0.get()).load(Ordering::Relaxed) }
    }
}

impl Cell<i64> {
    /// Reads the field without its lock (see `Cell<u32>`).
    #[inline]
    pub fn load_racy(&self) -> i64 {
        crate::census::touch(self.addr(), 8);
        // SAFETY: the cell is 8-byte aligned memory that stays mapped.
        unsafe { AtomicU64::from_ptr(self.0.get() as *mut u64).load(Ordering::Relaxed) as i64 }
    }
}

impl Cell<u64> {
    /// Reads the field without the domain lock (a hint, see `Cell<u32>`).
    #[inline]
    pub fn load_racy(&self) -> u64 {
        crate::census::touch(self.addr(), 8);
        // SAFETY: the cell is 8-byte aligned memory that stays mapped.
        unsafe { AtomicU64::from_ptr(self.0.get()).load(Ordering::Relaxed) }
    }
}

impl<T: 'static> Cell<P<T>> {
    /// Reads the field without its lock (see `Cell<u32>`).
    #[inline]
    pub fn load_racy(&self) -> P<T> {
        crate::census::touch(self.addr(), 8);
        // SAFETY: the cell is 8-byte aligned memory that stays mapped.
        P::from_off(unsafe { AtomicU64::from_ptr(self.0.get() as *mut u64).load(Ordering::Relaxed) })
    }
}

/// A byte offset into the segment that names a record of type `T`.
/// Offset 0 is the header, so 0 doubles as "null".
#[repr(transparent)]
pub struct P<T>(u64, PhantomData<fn() -> T>);

impl<T> P<T> {
    pub const NULL: P<T> = P(0, PhantomData);
    #[inline]
    pub const fn from_off(off: u64) -> Self {
        P(off, PhantomData)
    }
    #[inline]
    pub const fn off(self) -> u64 {
        self.0
    }
    #[inline]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }
    pub fn cast<U>(self) -> P<U> {
        P(self.0, PhantomData)
    }
}

impl<T> Clone for P<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for P<T> {}
impl<T> Default for P<T> {
    fn default() -> Self {
        P::NULL
    }
}
impl<T> PartialEq for P<T> {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl<T> Eq for P<T> {}
impl<T> core::fmt::Debug for P<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "@{:#x}", self.0)
    }
}

// SAFETY: an offset is an integer; every bit pattern is valid.
unsafe impl<T: 'static> Pod for P<T> {
    fn to_bits(self) -> u64 {
        self.0
    }
    fn from_bits(bits: u64) -> Self {
        P(bits, PhantomData)
    }
}

/// The mapping of a segment in this process.
pub struct Segment {
    base: *mut u8,
    len: usize,
}

// SAFETY: the segment is a plain memory range; all mutation of its records
// is serialised by the domain lock, and the lock-free fields are atomics.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// Maps `len` bytes of the segment file `fd` shared, readable and
    /// writable.
    /// The range is owned by the Segment from then on, and unmapped when it
    /// is dropped.
    pub fn map(fd: i32, len: usize) -> crate::errno::Result<Segment> {
        let base = crate::sys::mmap_shared(fd, len, libc::PROT_READ | libc::PROT_WRITE)?;
        let seg = Segment { base, len };
        if !crate::ownmem::add(base as usize, len) {
            return Err(crate::errno::Errno::ENOMEM);
        }
        Ok(seg)
    }

    /// The record at `p`. Panics if it does not lie inside the segment:
    /// a corrupt offset must never become a wild access (the panic
    /// quarantines the domain, see `fault`).
    #[inline]
    #[track_caller]
    pub fn rec<T>(&self, p: P<T>) -> &T {
        match self.try_rec(p) {
            Some(r) => r,
            None => bad_offset(p.off()),
        }
    }

    /// The record at `p`, or None if `p` does not lie beyond the undo log
    /// (where every record lives, in the wake-up tables or the heap; the
    /// header and the log are reached otherwise), is misaligned or runs
    /// past the segment.
    #[inline]
    pub fn try_rec<T>(&self, p: P<T>) -> Option<&T> {
        let off = p.off();
        let fits = off >= WAKE_OFF
            && off % core::mem::align_of::<T>() as u64 == 0
            && off.checked_add(core::mem::size_of::<T>() as u64).is_some_and(|end| end <= self.len as u64);
        // SAFETY: in bounds and aligned (checked above); records consist of
        // Cells/atomics, which are valid for any bit pattern and are only
        // mutated through interior mutability.
        fits.then(|| unsafe { &*(self.base.add(off as usize) as *const T) })
    }

    /// The record at `off` in the fixed tables between the header and the
    /// undo log (the transaction slots), or None if it is not inside them
    /// or is misaligned.
    #[inline]
    pub fn try_fixed<T>(&self, off: u64) -> Option<&T> {
        let fits = off >= core::mem::size_of::<crate::layout::Header>() as u64
            && off % core::mem::align_of::<T>() as u64 == 0
            && off.checked_add(core::mem::size_of::<T>() as u64).is_some_and(|end| end <= LOG_OFF && end <= self.len as u64);
        // SAFETY: in bounds and aligned (checked above); the fixed tables
        // consist of Cells, atomics and robust mutexes, which are valid for
        // any bit pattern and only mutated through interior mutability.
        fits.then(|| unsafe { &*(self.base.add(off as usize) as *const T) })
    }

    /// Whether `p` names a record that lies inside the segment (what
    /// [`rec`](Self::rec) asserts), for walks that must not trust it.
    pub(crate) fn holds<T>(&self, p: P<T>) -> bool {
        let off = p.off() as usize;
        off != 0 && off % core::mem::align_of::<T>() == 0 && off.checked_add(core::mem::size_of::<T>()).is_some_and(|end| end <= self.len)
    }

    /// The header (the record at offset 0).
    #[inline]
    pub fn at0<T>(&self) -> &T {
        assert!(core::mem::size_of::<T>() <= self.len);
        // SAFETY: offset 0 is in bounds and page aligned.
        unsafe { &*(self.base as *const T) }
    }

    /// Writes undo entry `n` (three words) of the log at `log_off`.
    #[inline]
    pub(crate) fn write_log_entry(&self, log_off: u64, n: u64, words: [u64; 3]) {
        let off = log_off + n * 24;
        assert!(off + 24 <= self.len as u64);
        crate::census::write(self.base as usize + off as usize, 24);
        crate::census::undo_entry();
        // SAFETY: in bounds (checked) and 8-byte aligned (log_off and the
        // entry size are multiples of 8); the log is only written by the
        // lock holder.
        unsafe { (self.base.add(off as usize) as *mut [u64; 3]).write(words) }
    }

    /// `n` consecutive u64 cells at `off` beyond the undo log (hash table
    /// slots, handle arrays, free-list links). Panics like
    /// [`rec`](Self::rec) if they are not there.
    #[track_caller]
    pub(crate) fn cells(&self, off: u64, n: usize) -> &[Cell<u64>] {
        self.try_cells(off, n).unwrap_or_else(|| bad_range(off, n as u64 * 8))
    }

    /// `n` consecutive u64 cells at `off` beyond the undo log, or None if
    /// they are misaligned or not there.
    pub(crate) fn try_cells(&self, off: u64, n: usize) -> Option<&[Cell<u64>]> {
        if off < WAKE_OFF {
            return None;
        }
        self.any_cells(off, n)
    }

    /// Entry `n` of the undo log (three cells at `log_off`).
    pub(crate) fn log_cells(&self, n: u64) -> &[Cell<u64>] {
        let off = LOG_OFF + n * 24;
        assert!(off + 24 <= WAKE_OFF, "undo log entry {n} beyond the log");
        self.any_cells(off, 3).expect("inside the segment")
    }

    fn any_cells(&self, off: u64, n: usize) -> Option<&[Cell<u64>]> {
        let len = n.checked_mul(8)?;
        if off % 8 != 0 || !self.in_bounds(off, len) {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above); Cell<u64> is valid
        // for any bits.
        Some(unsafe { core::slice::from_raw_parts(self.base.add(off as usize) as *const Cell<u64>, n) })
    }

    fn in_bounds(&self, off: u64, len: usize) -> bool {
        off.checked_add(len as u64).is_some_and(|end| end <= self.len as u64)
    }

    /// Raw address of a segment offset (for bulk zeroing of fresh blocks).
    #[track_caller]
    pub(crate) fn raw(&self, off: u64, len: usize) -> *mut u8 {
        if !self.in_bounds(off, len) {
            bad_range(off, len as u64);
        }
        // SAFETY: in bounds (checked above).
        unsafe { self.base.add(off as usize) }
    }

    /// The segment offset of an address inside it.
    #[inline]
    pub(crate) fn off_of(&self, addr: usize) -> u64 {
        let base = self.base as usize;
        assert!(addr >= base && addr < base + self.len, "address outside segment");
        (addr - base) as u64
    }

    /// Writes `bits` (of `size` bytes) at `off`: the undo path. False
    /// (and nothing written) if the range leaves the segment.
    pub(crate) fn write_bits(&self, off: u64, size: u32, bits: u64) -> bool {
        if !matches!(size, 1 | 2 | 4 | 8) || !self.in_bounds(off, size as usize) {
            return false;
        }
        let p = self.raw(off, size as usize);
        crate::census::write(p as usize, size as usize);
        // SAFETY: in bounds; recovery holds the domain lock.
        unsafe {
            match size {
                1 => p.write(bits as u8),
                2 => (p as *mut u16).write_unaligned(bits as u16),
                4 => (p as *mut u32).write_unaligned(bits as u32),
                _ => (p as *mut u64).write_unaligned(bits),
            }
        }
        true
    }

    /// Zeroes a range (fresh allocations only).
    pub(crate) fn zero(&self, off: u64, len: usize) {
        let p = self.raw(off, len);
        crate::census::write(p as usize, len);
        // SAFETY: in bounds; the range belongs to a block allocated by the
        // running transaction, which nobody else can reach yet.
        unsafe { core::ptr::write_bytes(p, 0, len) }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn bad_offset(off: u64) -> ! {
    panic!("bad shared offset {off:#x}")
}

#[cold]
#[inline(never)]
#[track_caller]
fn bad_range(off: u64, len: u64) -> ! {
    panic!("bad shared range {off:#x}+{len:#x}")
}

impl Drop for Segment {
    fn drop(&mut self) {
        crate::ownmem::remove(self.base as usize);
        // SAFETY: the mapping is owned by this value and no longer borrowed.
        unsafe { crate::sys::munmap(self.base, self.len) }
    }
}

// ------------------------------------------------------------------ pools

/// This process's read-write mapping of one peer's pool file, as long as
/// the file was when it was mapped (`POOL_SIZE` or `POOL_MAP_LEN`: a
/// process that writes to many pools of the first size then reserves an
/// eighth of the address space it would for the largest), unmapped when
/// dropped. A pool that grew is mapped again, longer, by the first use
/// beyond the old mapping (`Domain::pool_for`). The domain's per-process
/// cache shares it (`Arc`) with the copies in progress, so a copy made
/// with no lock held keeps it mapped even if the peer goes away. Every
/// range is checked against the mapping's length; that the range belongs
/// to the caller (a slice it allocated, pages no live slice uses, inside
/// the pool's current size) is the pool allocator's business.
pub struct PoolMapping {
    base: *mut u8,
    len: u64,
}

// SAFETY: a plain memory range. Writers write only ranges the pool
// allocator gave them (a slice not yet visible, or free pages under the
// peer's lock).
unsafe impl Send for PoolMapping {}
// SAFETY: as above.
unsafe impl Sync for PoolMapping {}

impl PoolMapping {
    /// Maps the pool file `fd` shared, readable and writable. A mapping
    /// refused for want of address space is ENOMEM, whatever the refusal
    /// said (the kernel says ENOMEM; valgrind, whose address space holds
    /// a few dozen pools, EINVAL, which would blame the caller's input).
    pub fn map(fd: i32, len: u64) -> crate::errno::Result<PoolMapping> {
        assert!(len <= POOL_MAP_LEN);
        let base = crate::sys::mmap_shared(fd, len as usize, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| match e {
            crate::errno::Errno::EINVAL => crate::errno::Errno::ENOMEM,
            e => e,
        })?;
        if !crate::ownmem::add(base as usize, len as usize) {
            // SAFETY: the mapping was just made and nobody uses it.
            unsafe { crate::sys::munmap(base, len as usize) };
            return Err(crate::errno::Errno::ENOMEM);
        }
        Ok(PoolMapping { base, len })
    }

    /// Whether `off..off+len` lies inside the mapping.
    #[inline]
    pub fn covers(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// The address of `off..off+len`; panics if it leaves the mapping
    /// (callers map a grown pool again first: `Domain::pool_for`).
    fn at(&self, off: u64, len: u64) -> *mut u8 {
        assert!(self.covers(off, len), "pool range {off:#x}+{len:#x} beyond a mapping of {:#x}", self.len);
        // SAFETY: in bounds of the mapping, just checked.
        unsafe { self.base.add(off as usize) }
    }

    /// Writes `bytes` at `off`.
    pub fn write(&self, off: u64, bytes: &[u8]) {
        let dst = self.at(off, bytes.len() as u64);
        // SAFETY: `dst` is valid for `bytes.len()` bytes (checked by `at`),
        // and a mapping of a file never overlaps the caller's buffer.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) }
    }

    /// Copies `len` bytes from the caller's address `addr` to `off`.
    pub fn copy_in(&self, off: u64, mem: &dyn UserMem, addr: u64, len: usize) -> crate::errno::Result<()> {
        let dst = self.at(off, len as u64);
        // SAFETY: `dst` is valid for `len` bytes of writes (checked by `at`).
        unsafe { mem.copy_in(dst, addr, len) }
    }

    /// Copies `bytes` (our own memory) to `off` through the fault-safe
    /// path of `mem` (ENOMEM if the file system cannot give the pages).
    pub fn copy_shared(&self, off: u64, bytes: &[u8], mem: &dyn UserMem) -> crate::errno::Result<()> {
        let dst = self.at(off, bytes.len() as u64);
        // SAFETY: `dst` is valid for `bytes.len()` bytes of writes (checked
        // by `at`), and a mapping of a file never overlaps `bytes`.
        unsafe { mem.copy_shared(dst, bytes) }
    }

    /// Zeroes `off..off+len` through the fault-safe path of `mem`, so that
    /// its pages exist (ENOMEM if the file system cannot give them).
    pub fn zero(&self, off: u64, len: usize, mem: &dyn UserMem) -> crate::errno::Result<()> {
        let dst = self.at(off, len as u64);
        // SAFETY: `dst` is valid for `len` bytes of writes (checked by `at`).
        unsafe { mem.zero_shared(dst, len) }
    }

    /// Gives the pages of `off..off+len` back to the file system (they
    /// read as zeros afterwards).
    pub fn punch(&self, off: u64, len: u64) -> crate::errno::Result<()> {
        let p = self.at(off, len);
        // SAFETY: the range lies inside the mapping (checked by `at`).
        unsafe { crate::sys::madvise_remove(p, len as usize) }
    }
}

impl Drop for PoolMapping {
    fn drop(&mut self) {
        crate::ownmem::remove(self.base as usize);
        // SAFETY: the mapping is owned by this value, and the last Arc
        // holding it is gone, so nobody uses it.
        unsafe { crate::sys::munmap(self.base, self.len as usize) }
    }
}

/// An atomic u64 field, for the values read and written without the lock
/// (see the locking and wake-up rules in `txn`). Read-modify-write
/// operations are sequentially consistent: the wake-up protocol relies on a
/// store by one party and a later load by the other never both missing
/// each other.
#[repr(transparent)]
pub struct Atomic64(AtomicU64);

impl Atomic64 {
    pub fn load(&self) -> u64 {
        crate::census::touch(self as *const Self as usize, 8);
        self.0.load(Ordering::Acquire)
    }
    pub fn store(&self, v: u64) {
        crate::census::write(self as *const Self as usize, 8);
        self.0.store(v, Ordering::Release)
    }
    pub fn compare_exchange(&self, old: u64, new: u64) -> bool {
        crate::census::write(self as *const Self as usize, 8);
        self.0.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
    /// Adds `v` (wrapping: a negative delta cast to u64 subtracts);
    /// returns the previous value.
    pub fn fetch_add(&self, v: u64) -> u64 {
        crate::census::write(self as *const Self as usize, 8);
        self.0.fetch_add(v, Ordering::SeqCst)
    }
    pub fn fetch_or(&self, v: u64) -> u64 {
        crate::census::write(self as *const Self as usize, 8);
        self.0.fetch_or(v, Ordering::SeqCst)
    }
    pub fn fetch_and(&self, v: u64) -> u64 {
        crate::census::write(self as *const Self as usize, 8);
        self.0.fetch_and(v, Ordering::SeqCst)
    }
    /// Raises the value to at least `v`; returns the previous value.
    pub fn fetch_max(&self, v: u64) -> u64 {
        crate::census::write(self as *const Self as usize, 8);
        self.0.fetch_max(v, Ordering::SeqCst)
    }
    /// A load ordered after every earlier store of this thread (the load
    /// half of the wake-up handshake).
    pub fn load_seqcst(&self) -> u64 {
        crate::census::touch(self as *const Self as usize, 8);
        self.0.load(Ordering::SeqCst)
    }
}

/// An atomic u32 field; also a futex word (see `sys::futex_wait`).
#[repr(transparent)]
pub struct Atomic32(AtomicU32);

impl Atomic32 {
    pub fn load(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn store(&self, v: u32) {
        self.0.store(v, Ordering::SeqCst)
    }
    pub fn fetch_add(&self, v: u32) -> u32 {
        self.0.fetch_add(v, Ordering::SeqCst)
    }
    /// The word itself, for the futex calls.
    pub fn as_atomic(&self) -> &AtomicU32 {
        &self.0
    }
}
