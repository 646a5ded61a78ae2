//! Signal dispositions (the fault handler of `uaccess` owns SIGSEGV and
//! SIGBUS) and identity changes, which invalidate cached credentials.
#![allow(clippy::missing_safety_doc)]

use super::*;

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
    call_real!(crate::real::SIGACTION, fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int, sig, act, old)
}

type SigHandler = libc::sighandler_t;

unsafe fn signal_common(real: &crate::real::Real, sig: c_int, handler: SigHandler, flags: c_int) -> SigHandler {
    if uaccess::owns(sig) {
        let old = uaccess::app_action(sig).sa_sigaction;
        let mut act: libc::sigaction = core::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = flags;
        uaccess::set_app_action(sig, &act);
        return old;
    }
    call_real!(real, fn(c_int, SigHandler) -> SigHandler, sig, handler)
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
