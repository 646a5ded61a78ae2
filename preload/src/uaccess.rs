//! Fault-safe access to the caller's memory (ioctl arguments, payload).
//!
//! A bad pointer passed to an ioctl must give EFAULT, never a signal, and
//! the hot path must not pay a system call per copy. Copies therefore run
//! through one small assembly routine (`rep movsb`); a SIGSEGV/SIGBUS
//! handler recognises a fault at exactly that instruction and resumes at a
//! fixup that returns the number of bytes not copied (like the kernel's
//! exception tables). Every other fault is passed on to the application's
//! own handler, or to the default action. The application's
//! `sigaction`/`signal` calls for these two signals are recorded instead of
//! replacing the shim's handler (see `interpose`).
//!
//! Two more rules make the caller's memory exactly the caller's:
//! * an address inside memory the bus mapped for itself (the segment, its
//!   read-write pool mappings, the watcher's stack: shm-core's `ownmem`)
//!   is EFAULT, read or written;
//! * a copy into the bus's shared memory that faults there (SIGBUS: the
//!   memory file system is full) is ENOMEM, not EFAULT: the caller's
//!   pointers were fine.
//!
//! This module is one of the few that contain `unsafe`.

use core::sync::atomic::{AtomicBool, Ordering};
use libc::{c_int, c_void, siginfo_t};
use shm_core::{Errno, UserMem, USER_LIMIT};

// Copies rdx bytes from rsi to rdi; returns in rax 0 if all were copied,
// else a count at least as large as the bytes not copied, and in rdx the
// address of a SIGBUS that stopped it (else 0). rcx always holds the
// bytes not yet known to be copied (it drops after a block's stores), so
// a fault at any instruction between `bus1_uaccess_copy` and
// `bus1_uaccess_end` can be resumed at `bus1_uaccess_fixup`, which
// returns rcx (the fault handler has set rdx). Copies below 2 KiB (a
// payload of a few hundred bytes to a page or two, ioctl structs) go by
// 64-byte blocks of SSE2 moves, then words, then bytes: `rep movsb` has a
// long start-up time and, into memory not in the cache, took twice as
// long for 1 KiB on the machines measured; from 2 KiB on it is as fast.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.bus1_uaccess,\"ax\",@progbits",
    ".globl bus1_uaccess_copy",
    ".hidden bus1_uaccess_copy",
    ".type bus1_uaccess_copy,@function",
    "bus1_uaccess_copy:",
    "    mov rcx, rdx",
    "    cmp rcx, 2048",
    "    jae 4f",
    "1:  cmp rcx, 64",
    "    jb 2f",
    "    movdqu xmm0, xmmword ptr [rsi]",
    "    movdqu xmm1, xmmword ptr [rsi + 16]",
    "    movdqu xmm2, xmmword ptr [rsi + 32]",
    "    movdqu xmm3, xmmword ptr [rsi + 48]",
    "    movdqu xmmword ptr [rdi], xmm0",
    "    movdqu xmmword ptr [rdi + 16], xmm1",
    "    movdqu xmmword ptr [rdi + 32], xmm2",
    "    movdqu xmmword ptr [rdi + 48], xmm3",
    "    add rsi, 64",
    "    add rdi, 64",
    "    sub rcx, 64",
    "    jmp 1b",
    "2:  cmp rcx, 8",
    "    jb 3f",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rcx, 8",
    "    jmp 2b",
    "3:  test rcx, rcx",
    "    jz 5f",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp 3b",
    "4:  rep movsb",
    "5:  xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".globl bus1_uaccess_end",
    ".hidden bus1_uaccess_end",
    "bus1_uaccess_end:",
    ".globl bus1_uaccess_fixup",
    ".hidden bus1_uaccess_fixup",
    "bus1_uaccess_fixup:",
    "    mov rax, rcx",
    "    ret",
    ".size bus1_uaccess_copy, .-bus1_uaccess_copy",
    ".popsection",
);

/// What a copy left undone.
#[repr(C)]
struct CopyResult {
    /// 0 if every byte was copied, else at least the bytes not copied.
    left: usize,
    /// The address of the SIGBUS that stopped the copy, or 0.
    bus_fault: usize,
}

#[cfg(target_arch = "x86_64")]
extern "C" {
    /// Copies `len` bytes (returned in rax:rdx, as the ABI returns a
    /// two-word struct).
    fn bus1_uaccess_copy(dst: *mut u8, src: *const u8, len: usize) -> CopyResult;
    static bus1_uaccess_end: u8;
    static bus1_uaccess_fixup: u8;
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether the shim owns `sig` (its handler is installed).
pub fn owns(sig: c_int) -> bool {
    matches!(sig, libc::SIGSEGV | libc::SIGBUS) && INSTALLED.load(Ordering::Acquire)
}

/// The application's recorded action for `sig` (kept in `sigdefer`'s
/// table of actions, which signal handlers may read).
pub fn app_action(sig: c_int) -> libc::sigaction {
    crate::sigdefer::recorded(sig)
}

/// Records the application's new action for `sig`.
pub fn set_app_action(sig: c_int, act: &libc::sigaction) {
    crate::sigdefer::record(sig, act);
}

extern "C" fn on_fault(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler;
    // the instruction pointer is redirected only when it lies inside our
    // copy routine, whose fixup expects the count left in rcx.
    unsafe {
        let uc = ctx as *mut libc::ucontext_t;
        let ip = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        let start = bus1_uaccess_copy as *const () as usize;
        let end = &bus1_uaccess_end as *const u8 as usize;
        if ip >= start && ip < end {
            let bus_fault = if sig == libc::SIGBUS { (*info).si_addr() as i64 } else { 0 };
            (*uc).uc_mcontext.gregs[libc::REG_RDX as usize] = bus_fault;
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = &bus1_uaccess_fixup as *const u8 as i64;
            return;
        }
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not ours to the application's disposition.
fn chain(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let act = app_action(sig);
    let h = act.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Restore the default and return: the faulting instruction runs
        // again and the kernel applies the default action.
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
        let d: libc::sigaction = unsafe { core::mem::zeroed() };
        crate::sigdefer::real_sigaction(sig, Some(&d), None);
        return;
    }
    if act.sa_flags & libc::SA_RESETHAND != 0 {
        // SAFETY: zeroed sigaction is SIG_DFL with an empty mask.
        let mut d: libc::sigaction = unsafe { core::mem::zeroed() };
        d.sa_sigaction = libc::SIG_DFL;
        set_app_action(sig, &d);
    }
    crate::sigdefer::call_handler(&act, sig, info, ctx);
}

/// Installs the fault handler (once per process), recording whatever the
/// application had installed before.
pub fn install() {
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
        let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
        crate::sigdefer::real_sigaction(sig, None, Some(&mut old));
        if !crate::sigdefer::is_recorded(sig) {
            set_app_action(sig, &old);
        }
        // SAFETY: as above.
        let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
        act.sa_sigaction = on_fault as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        crate::sigdefer::real_sigaction(sig, Some(&act), None);
    }
    INSTALLED.store(true, Ordering::Release);
}

/// Copies between the caller's memory and ours; Err(EFAULT) if any byte
/// is inaccessible, Err(ENOMEM) if the copy stopped at a SIGBUS inside the
/// bus's shared destination `shared` (its memory could not be had).
///
/// Inlined into every accessor (it runs several times per ioctl); what is
/// done only on a failure is kept out of line.
#[inline(always)]
fn copy(dst: *mut u8, src: *const u8, len: usize, shared: Option<*mut u8>) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    if !INSTALLED.load(Ordering::Acquire) {
        install();
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a fault inside the routine is caught by `on_fault` and turns
    // into a short count; the caller guarantees that the non-user side of
    // the copy is valid.
    let r = unsafe { bus1_uaccess_copy(dst, src, len) };
    #[cfg(not(target_arch = "x86_64"))]
    let r = CopyResult { left: fallback_copy(dst, src, len), bus_fault: 0 };
    if r.left == 0 {
        Ok(())
    } else {
        Err(copy_failure(&r, len, shared))
    }
}

/// What a copy that stopped short reports: ENOMEM if a SIGBUS stopped it
/// inside the bus's shared destination `shared`, EFAULT otherwise.
#[cold]
#[inline(never)]
fn copy_failure(r: &CopyResult, len: usize, shared: Option<*mut u8>) -> Errno {
    let in_shared = shared.is_some_and(|s| r.bus_fault >= s as usize && r.bus_fault < s as usize + len);
    if in_shared {
        Errno::ENOMEM
    } else {
        Errno::EFAULT
    }
}

/// A page of zeros, the source of [`ProcMem::zero_shared`].
static ZEROS: [u8; 4096] = [0; 4096];

#[cfg(not(target_arch = "x86_64"))]
fn fallback_copy(dst: *mut u8, src: *const u8, len: usize) -> usize {
    // Without the fixup routine, let the kernel do the checked copy.
    let local = libc::iovec { iov_base: dst as *mut c_void, iov_len: len };
    let remote = libc::iovec { iov_base: src as *mut c_void, iov_len: len };
    // SAFETY: both iovecs describe the requested ranges; the kernel checks
    // accessibility and reports a short count instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n < 0 { len } else { len - n as usize }
}

/// Whether `[addr, addr + len)` may be the caller's memory: inside the
/// user address space, not NULL, and not memory the bus mapped for itself.
#[inline(always)]
fn user_range(addr: u64, len: usize) -> Result<(), Errno> {
    let ok = shm_core::range_ok(addr, len as u64) && (len == 0 || addr != 0 && !shm_core::is_own_memory(addr, len as u64));
    if ok {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// The calling process's memory, as the engine sees it.
pub struct ProcMem;

impl UserMem for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        user_range(addr, buf.len())?;
        copy(buf.as_mut_ptr(), addr as *const u8, buf.len(), None)
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), Errno> {
        user_range(addr, buf.len())?;
        copy(addr as *mut u8, buf.as_ptr(), buf.len(), None)
    }

    unsafe fn copy_in(&self, dst: *mut u8, addr: u64, len: usize) -> Result<(), Errno> {
        user_range(addr, len)?;
        copy(dst, addr as *const u8, len, Some(dst))
    }

    unsafe fn zero_shared(&self, dst: *mut u8, len: usize) -> Result<(), Errno> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len());
            // SAFETY: the caller guarantees `dst` is valid for `len` bytes.
            let at = unsafe { dst.add(done) };
            copy(at, ZEROS.as_ptr(), n, Some(at))?;
            done += n;
        }
        Ok(())
    }

    unsafe fn copy_shared(&self, dst: *mut u8, src: &[u8]) -> Result<(), Errno> {
        copy(dst, src.as_ptr(), src.len(), Some(dst))
    }
}

const _: () = assert!(USER_LIMIT > 0);
