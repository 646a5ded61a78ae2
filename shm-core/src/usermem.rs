//! Access to the caller's memory.
//!
//! The engine never dereferences an address that came from an ioctl
//! argument itself: it asks a [`UserMem`], which either succeeds or reports
//! EFAULT. The preload shim implements it with fault-safe copies; tests
//! implement it over a simulated address space. This module is one of the
//! few that contain `unsafe` (viewing ABI structs as bytes).

use crate::errno::{Errno, Result};

/// The highest user address plus one (x86-64 TASK_SIZE_MAX); a range that
/// reaches beyond it is outside the user address space.
pub const USER_LIMIT: u64 = 0x7fff_ffff_f000;

/// Whether `[base, base+len)` lies inside the user address space.
pub fn range_ok(base: u64, len: u64) -> bool {
    len <= USER_LIMIT && base <= USER_LIMIT - len
}

pub trait UserMem {
    /// Copies `buf.len()` bytes from caller address `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()>;
    /// Copies `buf` to caller address `addr`.
    fn write(&self, addr: u64, buf: &[u8]) -> Result<()>;
    /// Copies `len` bytes from caller address `addr` straight into shared
    /// memory at `dst`: EFAULT if the caller's memory cannot be read,
    /// ENOMEM if the shared memory cannot be had (its file system is
    /// full), where a plain copy would take a fault.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes.
    unsafe fn copy_in(&self, dst: *mut u8, addr: u64, len: usize) -> Result<()>;
    /// Stores `len` zero bytes at `dst` in shared memory, so that its
    /// pages exist before the bus writes them without further ado: ENOMEM
    /// if they cannot be had, as for `copy_in`.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes.
    unsafe fn zero_shared(&self, dst: *mut u8, len: usize) -> Result<()>;
    /// Copies `src` (the bus's own memory) into shared memory at `dst`:
    /// ENOMEM if the shared memory cannot be had, as for `copy_in`.
    ///
    /// # Safety
    /// `dst` must be valid for `src.len()` bytes of writes and not overlap
    /// `src`.
    unsafe fn copy_shared(&self, dst: *mut u8, src: &[u8]) -> Result<()>;
}

pub fn read_u64(m: &dyn UserMem, addr: u64) -> Result<u64> {
    let mut b = [0u8; 8];
    m.read(addr, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

pub fn read_i32(m: &dyn UserMem, addr: u64) -> Result<i32> {
    let mut b = [0u8; 4];
    m.read(addr, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

/// Element `i` of an array of `size`-byte elements at `base`.
pub fn elem(base: u64, i: u64, size: u64) -> Result<u64> {
    i.checked_mul(size).and_then(|o| base.checked_add(o)).ok_or(Errno::EFAULT)
}

/// The ABI's argument types, which are copied to and from the caller's
/// memory as bytes.
///
/// # Safety
/// Implementors are integers or `#[repr(C)]` structs of integers without
/// padding: every byte pattern is a valid value and every byte is
/// initialised.
pub unsafe trait AbiPlain: Copy + Default + 'static {}

// SAFETY: integers, and structs of u64/u32 fields laid out without padding
// (their sizes and offsets are checked at compile time in `uapi`).
unsafe impl AbiPlain for u64 {}
// SAFETY: as above (fd numbers).
unsafe impl AbiPlain for i32 {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_cmd_peer_reset {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_cmd_peer_reset_u64 {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_cmd_handle_transfer {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_cmd_nodes_destroy {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_cmd_send {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_msg {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::bus1_cmd_recv {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::final_abi::bus1_msg {}
// SAFETY: as above.
unsafe impl AbiPlain for uapi::final_abi::bus1_cmd_recv {}

fn as_bytes<T: AbiPlain>(v: &T) -> &[u8] {
    // SAFETY: T has no padding (AbiPlain), so all its bytes are initialised.
    unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) }
}

/// Reads an ABI struct.
pub fn read_struct<T: AbiPlain>(m: &dyn UserMem, addr: u64) -> Result<T> {
    let mut v = T::default();
    // SAFETY: any byte pattern is a valid T (AbiPlain); the slice covers
    // exactly `v`.
    let bytes = unsafe { core::slice::from_raw_parts_mut(&mut v as *mut T as *mut u8, core::mem::size_of::<T>()) };
    m.read(addr, bytes)?;
    Ok(v)
}

/// Writes an ABI struct.
pub fn write_struct<T: AbiPlain>(m: &dyn UserMem, addr: u64, v: &T) -> Result<()> {
    m.write(addr, as_bytes(v))
}

/// A simulated caller address space, for tests and tools that drive the
/// engine without a real process behind the addresses. Unknown addresses
/// fault (EFAULT) like unmapped memory.
#[derive(Default)]
pub struct SimMem {
    regions: std::cell::RefCell<Vec<(u64, Vec<u8>, bool)>>,
}

impl SimMem {
    const BASE: u64 = 0x1000_0000;

    pub fn new() -> SimMem {
        SimMem::default()
    }

    fn next_base(&self) -> u64 {
        let r = self.regions.borrow();
        r.last().map(|(b, v, _)| (b + v.len() as u64 + 0x1fff) & !0xfff).unwrap_or(Self::BASE)
    }

    /// Maps `bytes` read-write; returns its address.
    pub fn put(&self, bytes: &[u8]) -> u64 {
        let base = self.next_base();
        self.regions.borrow_mut().push((base, bytes.to_vec(), true));
        base
    }

    /// Maps `bytes` read-only; writes fault.
    pub fn put_ro(&self, bytes: &[u8]) -> u64 {
        let base = self.next_base();
        self.regions.borrow_mut().push((base, bytes.to_vec(), false));
        base
    }

    /// Maps an array of u64 values.
    pub fn put_u64s(&self, v: &[u64]) -> u64 {
        self.put(&v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<_>>())
    }

    /// Maps an ABI struct.
    pub fn put_struct<T: AbiPlain>(&self, v: &T) -> u64 {
        self.put(as_bytes(v))
    }

    /// Reads back `len` bytes (panics on an unmapped range).
    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(addr, &mut v).expect("unmapped SimMem range");
        v
    }

    fn locate(&self, addr: u64, len: usize, write: bool) -> Result<(usize, usize)> {
        let r = self.regions.borrow();
        for (i, (b, v, w)) in r.iter().enumerate() {
            if addr >= *b && addr.checked_add(len as u64).is_some_and(|e| e <= b + v.len() as u64) {
                if write && !w {
                    return Err(Errno::EFAULT);
                }
                return Ok((i, (addr - b) as usize));
            }
        }
        Err(Errno::EFAULT)
    }
}

impl UserMem for SimMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (i, o) = self.locate(addr, buf.len(), false)?;
        buf.copy_from_slice(&self.regions.borrow()[i].1[o..o + buf.len()]);
        Ok(())
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (i, o) = self.locate(addr, buf.len(), true)?;
        self.regions.borrow_mut()[i].1[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    unsafe fn copy_in(&self, dst: *mut u8, addr: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (i, o) = self.locate(addr, len, false)?;
        let r = self.regions.borrow();
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes; the
        // source range was bounds-checked by `locate`.
        unsafe { core::ptr::copy_nonoverlapping(r[i].1[o..].as_ptr(), dst, len) };
        Ok(())
    }

    unsafe fn zero_shared(&self, dst: *mut u8, len: usize) -> Result<()> {
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes.
        unsafe { core::ptr::write_bytes(dst, 0, len) };
        Ok(())
    }

    unsafe fn copy_shared(&self, dst: *mut u8, src: &[u8]) -> Result<()> {
        // SAFETY: the caller guarantees `dst` is valid for `src.len()`
        // bytes and does not overlap `src`.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }
}

/// Caller memory made of Rust slices: what a program that links the
/// engine directly hands it instead of its raw address space. Addresses
/// are the slices' own; any access outside a slice given to it (or a
/// write to one given read-only) is EFAULT, so a wrong count in a command
/// cannot reach other memory.
#[derive(Default)]
pub struct SliceMem<'a> {
    read: Vec<&'a [u8]>,
    write: std::cell::RefCell<Vec<&'a mut [u8]>>,
}

/// The bytes of a slice of plain ABI values.
fn plain_bytes<T: AbiPlain>(v: &[T]) -> &[u8] {
    // SAFETY: T has no padding and every byte is initialised (AbiPlain);
    // the view covers exactly the slice and shares its lifetime.
    unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, core::mem::size_of_val(v)) }
}

impl<'a> SliceMem<'a> {
    pub fn new() -> SliceMem<'a> {
        SliceMem::default()
    }

    /// Makes `bytes` readable; returns its address.
    pub fn bytes(&mut self, bytes: &'a [u8]) -> u64 {
        self.read.push(bytes);
        bytes.as_ptr() as u64
    }

    /// Makes an array of ABI values (IDs, fd numbers) readable; returns
    /// its address.
    pub fn array<T: AbiPlain>(&mut self, v: &'a [T]) -> u64 {
        self.bytes(plain_bytes(v))
    }

    /// Makes an array of u64 slots writable (and readable); returns its
    /// address.
    pub fn writable_u64s(&mut self, v: &'a mut [u64]) -> u64 {
        let addr = v.as_ptr() as u64;
        let len = core::mem::size_of_val(v);
        // SAFETY: u64 has no padding and any byte pattern is a valid u64,
        // so the slice may be written as bytes; the view covers exactly the
        // slice and takes over its exclusive borrow.
        let bytes = unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, len) };
        self.write.get_mut().push(bytes);
        addr
    }

    /// Makes an `iovec` array and every buffer it names readable; returns
    /// the array's address.
    pub fn iovecs(&mut self, v: &'a [std::io::IoSlice<'a>]) -> u64 {
        for b in v {
            let b: &'a [u8] = std::ops::Deref::deref(b);
            self.read.push(b);
        }
        // SAFETY: the standard library guarantees that `IoSlice` is ABI
        // compatible with `struct iovec` on Unix (a pointer and a length,
        // both initialised, no padding); the view covers exactly the array.
        let bytes = unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, core::mem::size_of_val(v)) };
        self.bytes(bytes)
    }

    /// The readable region holding `[addr, addr+len)`: (region, offset).
    fn find_read(&self, addr: u64, len: usize) -> Result<(&'a [u8], usize)> {
        self.read
            .iter()
            .find_map(|r| within(r, addr, len).map(|o| (*r, o)))
            .ok_or(Errno::EFAULT)
    }
}

/// The offset of `[addr, addr+len)` in `region`, if it lies inside.
fn within(region: &[u8], addr: u64, len: usize) -> Option<usize> {
    let start = region.as_ptr() as u64;
    let off = addr.checked_sub(start)?;
    (off.checked_add(len as u64)? <= region.len() as u64).then_some(off as usize)
}

impl UserMem for SliceMem<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Ok((r, o)) = self.find_read(addr, buf.len()) {
            buf.copy_from_slice(&r[o..o + buf.len()]);
            return Ok(());
        }
        let w = self.write.borrow();
        let (r, o) = w.iter().find_map(|r| within(r, addr, buf.len()).map(|o| (r, o))).ok_or(Errno::EFAULT)?;
        buf.copy_from_slice(&r[o..o + buf.len()]);
        Ok(())
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let mut w = self.write.borrow_mut();
        let r = w.iter_mut().find(|r| within(r, addr, buf.len()).is_some()).ok_or(Errno::EFAULT)?;
        let o = within(r, addr, buf.len()).ok_or(Errno::EFAULT)?;
        r[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    unsafe fn copy_in(&self, dst: *mut u8, addr: u64, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (r, o) = self.find_read(addr, len)?;
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes; the
        // source lies inside a slice this memory was given.
        unsafe { core::ptr::copy_nonoverlapping(r[o..].as_ptr(), dst, len) };
        Ok(())
    }

    unsafe fn zero_shared(&self, dst: *mut u8, len: usize) -> Result<()> {
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes.
        unsafe { core::ptr::write_bytes(dst, 0, len) };
        Ok(())
    }

    unsafe fn copy_shared(&self, dst: *mut u8, src: &[u8]) -> Result<()> {
        // SAFETY: the caller guarantees `dst` is valid for `src.len()`
        // bytes and does not overlap `src`.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_end_at_the_user_limit() {
        assert!(range_ok(0, 0));
        assert!(range_ok(USER_LIMIT - 8, 8));
        assert!(!range_ok(USER_LIMIT - 8, 9));
        assert!(!range_ok(u64::MAX, 1));
        assert!(!range_ok(0, u64::MAX));
    }

    #[test]
    fn element_addresses_do_not_wrap() {
        assert_eq!(elem(0x1000, 3, 8), Ok(0x1018));
        assert_eq!(elem(u64::MAX - 4, 1, 8), Err(Errno::EFAULT));
        assert_eq!(elem(0x1000, u64::MAX, 8), Err(Errno::EFAULT));
    }

    #[test]
    fn slice_memory_reaches_its_slices_only() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let ids = [7u64, 9];
        let mut errs = [0u64; 2];
        let bufs = [std::io::IoSlice::new(&data[..4]), std::io::IoSlice::new(&data[4..])];
        let mut m = SliceMem::new();
        let a = m.array(&ids[..]);
        let v = m.iovecs(&bufs);
        let e = m.writable_u64s(&mut errs);
        assert_eq!(read_u64(&m, a + 8), Ok(9));
        assert_eq!(read_u64(&m, a + 12), Err(Errno::EFAULT));
        assert_eq!(read_u64(&m, v + 8), Ok(4));
        assert_eq!(m.write(a, &[0]), Err(Errno::EFAULT));
        assert_eq!(m.write(e + 8, &5u64.to_ne_bytes()), Ok(()));
        assert_eq!(m.write(e + 12, &5u64.to_ne_bytes()), Err(Errno::EFAULT));
        let mut out = [0u8; 4];
        // SAFETY: `out` is writable for 4 bytes.
        assert_eq!(unsafe { m.copy_in(out.as_mut_ptr(), data.as_ptr() as u64 + 4, 4) }, Ok(()));
        assert_eq!(out, [5, 6, 7, 8]);
        // SAFETY: as above. (Across the end of the second buffer.)
        assert_eq!(unsafe { m.copy_in(out.as_mut_ptr(), data.as_ptr() as u64 + 6, 4) }, Err(Errno::EFAULT));
        drop(m);
        assert_eq!(errs, [0, 5]);
    }

    #[test]
    fn simulated_memory_faults_outside_and_on_read_only_writes() {
        let m = SimMem::new();
        let rw = m.put(&[1, 2, 3, 4]);
        let ro = m.put_ro(&[9; 8]);
        assert_eq!(read_i32(&m, rw), Ok(i32::from_ne_bytes([1, 2, 3, 4])));
        assert_eq!(read_u64(&m, rw), Err(Errno::EFAULT));
        assert_eq!(m.write(ro, &[0]), Err(Errno::EFAULT));
        assert_eq!(m.write(rw, &[7]), Ok(()));
        assert_eq!(read_i32(&m, rw), Ok(i32::from_ne_bytes([7, 2, 3, 4])));
    }
}
