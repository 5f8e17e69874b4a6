//! Run-time compilation of the kernels: NVRTC straight to a cubin for one architecture, the
//! ptxas report (registers, shared memory, spills) parsed from the log, and a disk cache keyed by
//! a hash of source, options, NVRTC version and architecture.
//!
//! NVRTC is loaded dynamically (cudarc `dynamic-loading`). Where it lives outside the loader's
//! path (the PyPI wheel `nvidia-cuda-nvrtc`), `FLOWSTEER_NVRTC_LIB` names its `lib` directory and
//! [`nvrtc_available`] preloads `libnvrtc-builtins` and `libnvrtc` from there by full path, so
//! that NVRTC's own `dlopen` of the builtins finds them without `LD_LIBRARY_PATH`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use sha2::{Digest, Sha256};

/// One kernel's resource use, from ptxas.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct KernelReport {
    pub name: String,
    /// The module configuration the kernel was compiled in (e.g. `propagate D=2 H=64 ...`).
    pub config: String,
    pub registers: u32,
    /// Static shared memory plus the dynamic shared memory the host launches it with.
    pub shared_bytes: u32,
    /// Spill stores + spill loads (bytes); any non-zero value fails tests/kernels_compile.rs.
    pub spill_bytes: u32,
    /// Stack frame (local memory) bytes.
    pub stack_bytes: u32,
    /// `fs_propagate` only (filled by `ModuleConfig::annotate`): the variant (particles per
    /// thread × threads per block, e.g. `2x128`), ...
    pub variant: Option<String>,
    /// ... resident warps per SM from registers, block size and shared memory
    /// (super::occupancy; `None` for an architecture its table lacks), ...
    pub warps_per_sm: Option<u32>,
    /// ... shared-memory instructions per FFMA of one MLP evaluation, and the FP32 share the
    /// instruction mix allows (modules::InstructionMix).
    pub lds_per_ffma: Option<f64>,
    pub fp32_bound: Option<f64>,
}

/// A compiled module: the cubin and what ptxas said.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
    pub kernels: Vec<KernelReport>,
    /// Whether the cubin came from the disk cache (nothing was compiled).
    pub cached: bool,
}

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
}
const RTLD_NOW: c_int = 2;
const RTLD_GLOBAL: c_int = 0x100;

fn preload_from_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(dir) = std::env::var_os("FLOWSTEER_NVRTC_LIB") else { return };
        let dir = PathBuf::from(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        // Builtins first (libnvrtc needs them), the `.alt` variants never.
        names.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
        for p in names {
            let name = p.file_name().unwrap_or_default().to_string_lossy().to_string();
            if name.starts_with("libnvrtc") && name.contains(".so") && !name.contains(".alt.") {
                if let Ok(c) = CString::new(p.to_string_lossy().as_bytes()) {
                    // SAFETY: dlopen with a valid NUL-terminated path; the handle is kept for the
                    // life of the process on purpose.
                    unsafe { dlopen(c.as_ptr(), RTLD_NOW | RTLD_GLOBAL) };
                }
            }
        }
    });
}

/// Whether NVRTC can be loaded; `Err` says how to make it available.
pub fn nvrtc_available() -> Result<(), String> {
    preload_from_env();
    // SAFETY: only tries to dlopen the library by its candidate names.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err("NVRTC (libnvrtc.so.13) was not found: install the CUDA 13 toolkit or \
             `pip install nvidia-cuda-nvrtc==13.0.*`, then put its lib directory on LD_LIBRARY_PATH \
             or in FLOWSTEER_NVRTC_LIB"
            .into())
    }
}

/// NVRTC's version, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    nvrtc_available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| format!("nvrtcVersion failed: {e}"))?;
    Ok((major, minor))
}

/// Where compiled modules are cached: `$FLOWSTEER_CACHE_DIR`, else `$XDG_CACHE_HOME/flowsteer/kernels`,
/// else `~/.cache/flowsteer/kernels`, else a directory under the system temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLOWSTEER_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("flowsteer/kernels");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/flowsteer/kernels");
    }
    std::env::temp_dir().join("flowsteer-kernels")
}

/// The cache key: SHA-256 of everything that determines the compiled module: the source, the
/// options and the toolchain (for NVRTC its version and the architecture, e.g. `nvrtc 13.0 sm_90`).
pub fn cache_key(source: &str, options: &[String], toolchain: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"flowsteer-kernels-v1\0");
    h.update(source.as_bytes());
    for o in options {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(b"\0");
    h.update(toolchain.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn toolchain(version: (i32, i32), arch: &str) -> String {
    format!("nvrtc {}.{} {arch}", version.0, version.1)
}

/// Compiles `source` (a whole module, includes already inlined) for `arch` (e.g. `sm_90`),
/// reusing the disk cache unless `use_cache` is false. `label` names the module in errors and
/// reports. The ptxas report is always produced (`--ptxas-options=-v`).
pub fn compile(label: &str, source: &str, defines: &[String], arch: &str, use_cache: bool) -> anyhow::Result<Compiled> {
    nvrtc_available().map_err(anyhow::Error::msg)?;
    let version = nvrtc_version().map_err(anyhow::Error::msg)?;
    let mut options: Vec<String> = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        // The Rust side never contracts a*b+c; explicit fmaf where it does (mul_add).
        "--fmad=false".into(),
        "--ptxas-options=-v".into(),
        "-lineinfo".into(),
    ];
    options.extend(defines.iter().cloned());
    let key = cache_key(source, &options, &toolchain(version, arch));
    let dir = cache_dir();
    let cubin_path = dir.join(format!("{key}.cubin"));
    let log_path = dir.join(format!("{key}.log"));
    if use_cache {
        if let (Ok(cubin), Ok(log)) = (std::fs::read(&cubin_path), std::fs::read_to_string(&log_path)) {
            let kernels = parse_ptxas_report(&log, label);
            return Ok(Compiled { cubin, log, kernels, cached: true });
        }
    }
    let (cubin, log) = compile_uncached(label, source, &options)?;
    let kernels = parse_ptxas_report(&log, label);
    if use_cache {
        // A cache that cannot be written only costs a recompile next time.
        let _ = write_atomic(&dir, &cubin_path, &cubin).and_then(|_| write_atomic(&dir, &log_path, log.as_bytes()));
    }
    Ok(Compiled { cubin, log, kernels, cached: false })
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn compile_uncached(label: &str, source: &str, options: &[String]) -> anyhow::Result<(Vec<u8>, String)> {
    let src = CString::new(source).map_err(|_| anyhow::anyhow!("kernel source of {label} contains a NUL byte"))?;
    let name = CString::new(format!("{label}.cu")).unwrap();
    let prog = nvrtc::create_program(&src, Some(&name))
        .map_err(|e| anyhow::anyhow!("NVRTC could not create the program for {label}: {e}"))?;
    // SAFETY: `prog` is a live program until destroy_program below; `src` and `name` outlive it.
    let out = unsafe {
        let compiled = nvrtc::compile_program(prog, options);
        let log = nvrtc::get_program_log(prog).map(|l| c_chars_to_string(&l)).unwrap_or_default();
        let result = match compiled {
            Err(e) => Err(anyhow::anyhow!(
                "NVRTC failed to compile the {label} kernels ({e}) with options {options:?}; its log:\n{log}"
            )),
            Ok(()) => get_cubin(prog)
                .map(|c| (c, log.clone()))
                .map_err(|e| anyhow::anyhow!("NVRTC compiled {label} but returned no cubin ({e}); its log:\n{log}")),
        };
        let _ = nvrtc::destroy_program(prog);
        result
    };
    out
}

/// # Safety
/// `prog` must be a compiled, live NVRTC program.
unsafe fn get_cubin(prog: nvrtc_sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    let mut size = 0usize;
    nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| e.to_string())?;
    if size == 0 {
        return Err("empty cubin (was a virtual architecture such as compute_90 given?)".into());
    }
    let mut buf = vec![0u8; size];
    nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char).result().map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Parses ptxas's `-v` output into one report per entry function.
pub fn parse_ptxas_report(log: &str, config: &str) -> Vec<KernelReport> {
    let mut out: Vec<KernelReport> = Vec::new();
    // The record the next property lines belong to: an entry ("Compiling entry function"), or
    // a non-inlined device function ("Function properties for _Z..."), which gets its own row
    // (registers 0) so that its spills are reported and checked too.
    let mut current: Option<usize> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelReport { name, config: config.to_string(), ..Default::default() });
            current = Some(out.len() - 1);
            continue;
        }
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            let name = rest.trim().to_string();
            current = match out.iter().position(|r| r.name == name) {
                Some(k) => Some(k),
                None => {
                    out.push(KernelReport { name: format!("{name} (device function)"), config: config.to_string(), ..Default::default() });
                    Some(out.len() - 1)
                }
            };
            continue;
        }
        let Some(cur) = current.and_then(|k| out.get_mut(k)) else { continue };
        if line.contains("bytes stack frame") {
            cur.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            cur.spill_bytes = number_before(line, "bytes spill stores").unwrap_or(0) + number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used ") && line.contains("registers") {
            cur.registers = number_before(line, "registers").unwrap_or(0);
            cur.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

/// The integer right before `marker` in `line` (`"Used 10 registers"`, `"registers"` → 10).
fn number_before(line: &str, marker: &str) -> Option<u32> {
    let head = &line[..line.find(marker)?];
    head.trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// NVRTC's names for the architectures flowsteer targets, e.g. 9.0 → `sm_90`.
pub fn arch_name(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// Checks an `--arch` value.
pub fn validate_arch(arch: &str) -> Result<(), String> {
    let ok = arch.strip_prefix("sm_").map(|d| d.len() >= 2 && d.chars().take(2).all(|c| c.is_ascii_digit())).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("--arch {arch:?} is not a real GPU architecture; give one such as sm_80 or sm_90 (not compute_90: a cubin needs a real one)"))
    }
}

#[allow(dead_code)]
fn _cstr_unused(_: &CStr) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'fs_weigh' for 'sm_90'\n\
ptxas info    : Function properties for fs_weigh\n\
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 40 registers, used 1 barriers, 352 bytes smem\n\
ptxas info    : Compiling entry function 'fs_score' for 'sm_90'\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 12 registers\n\
ptxas info    : Function properties for _Z15fs_mlp_velocityPKff6fs_vec\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 4 bytes spill loads\n";
        let r = parse_ptxas_report(log, "potential");
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].name.as_str(), r[2].spill_bytes), ("_Z15fs_mlp_velocityPKff6fs_vec (device function)", 4));
        assert_eq!((r[0].name.as_str(), r[0].registers, r[0].shared_bytes, r[0].spill_bytes, r[0].stack_bytes), ("fs_weigh", 40, 352, 20, 16));
        assert_eq!((r[1].name.as_str(), r[1].registers, r[1].shared_bytes, r[1].spill_bytes), ("fs_score", 12, 0, 0));
    }

    #[test]
    fn cache_keys_change_with_every_input() {
        let o = vec!["-DX=1".to_string()];
        let k = cache_key("src", &o, &toolchain((13, 0), "sm_90"));
        assert_ne!(k, cache_key("src2", &o, &toolchain((13, 0), "sm_90")));
        assert_ne!(k, cache_key("src", &["-DX=2".to_string()], &toolchain((13, 0), "sm_90")));
        assert_ne!(k, cache_key("src", &o, &toolchain((13, 1), "sm_90")));
        assert_ne!(k, cache_key("src", &o, &toolchain((13, 0), "sm_80")));
    }

    #[test]
    fn arch_names_are_checked() {
        assert!(validate_arch("sm_90").is_ok());
        assert!(validate_arch("sm_100a").is_ok());
        assert!(validate_arch("compute_90").is_err());
        assert!(validate_arch("90").is_err());
    }
}
