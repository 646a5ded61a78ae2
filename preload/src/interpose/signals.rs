//! Signal dispositions (the fault handler of `uaccess` owns SIGSEGV and
//! SIGBUS; the application's other handlers run through `sigdefer`, so
//! that none runs inside a shim call; which signals the application
//! catches decides how a wait may sleep, see `wait`) and identity changes,
//! which invalidate cached credentials.
#![allow(clippy::missing_safety_doc)]

use super::*;
use core::sync::atomic::{AtomicU64, Ordering};

/// Signals the application has a handler for, one bit each.
static CAUGHT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn note_disposition(sig: c_int, handler: libc::sighandler_t) {
    if !(1..=128).contains(&sig) {
        return;
    }
    let (w, bit) = ((sig - 1) as usize / 64, 1u64 << ((sig - 1) % 64));
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        CAUGHT[w].fetch_and(!bit, Ordering::Relaxed);
    } else {
        CAUGHT[w].fetch_or(bit, Ordering::Relaxed);
    }
}

/// Whether the application catches any signal (SIGSEGV and SIGBUS
/// aside: they come only from faults of the thread itself).
pub(crate) fn app_catches_signals() -> bool {
    CAUGHT.iter().any(|w| w.load(Ordering::Relaxed) != 0)
}

// ------------------------------------------------------- fault handling

#[no_mangle]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if uaccess::owns(sig) {
        if !old.is_null() {
            *old = uaccess::app_action(sig);
        }
        if !act.is_null() {
            uaccess::set_app_action(sig, &*act);
        }
        return 0;
    }
    let r = if crate::sigdefer::deferrable(sig) {
        crate::sigdefer::sigaction(sig, act.as_ref(), old.as_mut())
    } else {
        call_real!(crate::real::SIGACTION, fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int, sig, act, old)
    };
    if r == 0 && !act.is_null() {
        note_disposition(sig, (*act).sa_sigaction);
    }
    r
}

type SigHandler = libc::sighandler_t;

/// `signal` and its variants: a `sigaction` with the flags (and, for the
/// BSD semantics, the mask of the signal itself) the C library uses.
unsafe fn signal_common(real: &crate::real::Real, sig: c_int, handler: SigHandler, flags: c_int) -> SigHandler {
    if !(uaccess::owns(sig) || crate::sigdefer::deferrable(sig)) {
        let r = call_real!(real, fn(c_int, SigHandler) -> SigHandler, sig, handler);
        if r != libc::SIG_ERR {
            note_disposition(sig, handler);
        }
        return r;
    }
    if handler == libc::SIG_ERR {
        set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    let mut act: libc::sigaction = core::mem::zeroed();
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    if flags & libc::SA_NODEFER == 0 {
        libc::sigaddset(&mut act.sa_mask, sig);
    }
    let mut old: libc::sigaction = core::mem::zeroed();
    if sigaction(sig, &act, &mut old) != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: SigHandler) -> SigHandler {
    signal_common(&crate::real::SIGNAL, sig, handler, libc::SA_RESTART)
}

#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, handler: SigHandler) -> SigHandler {
    signal_common(&crate::real::BSD_SIGNAL, sig, handler, libc::SA_RESTART)
}

#[no_mangle]
pub unsafe extern "C" fn sysv_signal(sig: c_int, handler: SigHandler) -> SigHandler {
    signal_common(&crate::real::SYSV_SIGNAL, sig, handler, libc::SA_RESETHAND | libc::SA_NODEFER)
}

// ------------------------------------------------------ identity changes

macro_rules! setid_fn {
    ($name:ident, $real:ident, ($($a:ident),*)) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: c_uint),*) -> c_int {
            let r = call_real!(crate::real::$real, fn($(setid_fn!(@t $a)),*) -> c_int, $($a),*);
            guarded(|| (), shm_core::invalidate_ids);
            r
        }
    };
    (@t $a:ident) => { c_uint };
}
setid_fn!(setuid, SETUID, (a));
setid_fn!(setgid, SETGID, (a));
setid_fn!(seteuid, SETEUID, (a));
setid_fn!(setegid, SETEGID, (a));
setid_fn!(setreuid, SETREUID, (a, b));
setid_fn!(setregid, SETREGID, (a, b));
setid_fn!(setresuid, SETRESUID, (a, b, c));
setid_fn!(setresgid, SETRESGID, (a, b, c));
