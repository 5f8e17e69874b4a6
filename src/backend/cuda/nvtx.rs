//! NVTX ranges (`propagate`, `potential`, `resample`, `gather`, `search`) for Nsight Systems and
//! `ncu --nvtx`, optional at run time.
//!
//! NVTX 3 is header-only for C; other languages reach it through `libnvtx3interop` (shipped with
//! recent CUDA and Nsight) or the older `libnvToolsExt`. Whichever loads first is used; when
//! neither is present (or `FLOWSTEER_NVTX=0`), ranges cost nothing and nothing fails.
//!
//! Ranges are off until [`enable`] is called (`--profile`): a run without it makes no NVTX call.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set by `--profile`; without it [`range`] does nothing (not even load the library).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns ranges on (`--profile`); returns whether an NVTX library was found, so that the caller
/// can say "ranges off" when it was not.
pub fn enable() -> bool {
    ENABLED.store(true, Ordering::Relaxed);
    nvtx().is_some()
}

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

type PushFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopFn = unsafe extern "C" fn() -> c_int;

struct Nvtx {
    push: PushFn,
    pop: PopFn,
}

const CANDIDATES: &[&str] =
    &["libnvtx3interop.so.1", "libnvtx3interop.so", "libnvToolsExt.so.1", "libnvToolsExt.so"];

fn nvtx() -> Option<&'static Nvtx> {
    static LIB: OnceLock<Option<Nvtx>> = OnceLock::new();
    LIB.get_or_init(|| {
        if std::env::var("FLOWSTEER_NVTX").map(|v| v == "0").unwrap_or(false) {
            return None;
        }
        for name in CANDIDATES {
            let c = CString::new(*name).ok()?;
            // SAFETY: dlopen/dlsym with valid C strings; the library stays loaded for the process.
            unsafe {
                let h = dlopen(c.as_ptr(), 2);
                if h.is_null() {
                    continue;
                }
                let push = dlsym(h, c"nvtxRangePushA".as_ptr());
                let pop = dlsym(h, c"nvtxRangePop".as_ptr());
                if !push.is_null() && !pop.is_null() {
                    return Some(Nvtx {
                        push: std::mem::transmute::<*mut c_void, PushFn>(push),
                        pop: std::mem::transmute::<*mut c_void, PopFn>(pop),
                    });
                }
            }
        }
        None
    })
    .as_ref()
}

/// Which NVTX library is in use, for `flowsteer info`.
pub fn status() -> &'static str {
    if nvtx().is_some() {
        "NVTX library found (ranges on under --profile)"
    } else {
        "NVTX library not found (ranges off)"
    }
}

/// An NVTX range, popped on drop.
pub struct Range {
    on: bool,
}

/// Opens a range named `name` (a static NUL-free name such as "propagate").
pub fn range(name: &'static std::ffi::CStr) -> Range {
    if !ENABLED.load(Ordering::Relaxed) {
        return Range { on: false };
    }
    match nvtx() {
        Some(n) => {
            // SAFETY: a valid C string; push/pop are the library's own symbols.
            unsafe { (n.push)(name.as_ptr()) };
            Range { on: true }
        }
        None => Range { on: false },
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        if self.on {
            if let Some(n) = nvtx() {
                // SAFETY: pairs the push in `range`.
                unsafe { (n.pop)() };
            }
        }
    }
}
