//! Occupancy by arithmetic: how many warps of a kernel an SM holds at once, from ptxas's
//! registers, the block size and the shared memory per block, with each architecture's limits
//! (CUDA C Programming Guide, "Compute capabilities", table of technical specifications).
//! No GPU needed, so `flowsteer info --kernels --arch sm_90` can report it for any variant.

/// Per-SM limits of one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmLimits {
    pub registers: u32,
    pub max_threads: u32,
    pub max_blocks: u32,
    /// Shared memory an SM gives to blocks (bytes), and the most one block may opt into.
    pub shared: u32,
    pub shared_per_block: u32,
}

/// The limits of `arch` (`sm_80`, `sm_86`, `sm_87`, `sm_89`, `sm_90`, `sm_100`, `sm_120`), or
/// `None` for an architecture this table does not know.
pub fn limits(arch: &str) -> Option<SmLimits> {
    let kib = |k: u32| k * 1024;
    let l = |max_threads, max_blocks, shared, per_block| SmLimits {
        registers: 65_536,
        max_threads,
        max_blocks,
        shared: kib(shared),
        shared_per_block: kib(per_block),
    };
    Some(match arch.trim_end_matches(['a', 'f']) {
        "sm_80" | "sm_87" => l(2048, 32, 164, 163),
        "sm_86" => l(1536, 16, 100, 99),
        "sm_89" | "sm_120" => l(1536, 24, 100, 99),
        "sm_90" | "sm_100" => l(2048, 32, 228, 227),
        _ => return None,
    })
}

/// Resident warps per SM for blocks of `threads` threads using `registers` registers per thread
/// and `shared` bytes of shared memory (static + dynamic); 0 if one block does not fit.
/// Registers are allocated per warp in units of 256; the driver reserves 1 KiB of shared memory
/// per block.
pub fn warps_per_sm(limits: &SmLimits, registers: u32, threads: u32, shared: u32) -> u32 {
    let warps_per_block = threads.div_ceil(32);
    if warps_per_block == 0 || shared > limits.shared_per_block || threads > 1024 {
        return 0;
    }
    let regs_per_warp = (registers.max(1) * 32).div_ceil(256) * 256;
    let by_registers = (limits.registers / regs_per_warp) / warps_per_block;
    let by_shared = limits.shared / (shared + 1024);
    let by_threads = limits.max_threads / (warps_per_block * 32);
    let blocks = by_registers.min(by_shared).min(by_threads).min(limits.max_blocks);
    blocks * warps_per_block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_follows_registers_threads_and_shared_memory() {
        let h100 = limits("sm_90").unwrap();
        // The figure: 182 registers × 128 threads → 8 warps per SM (two blocks of 4).
        assert_eq!(warps_per_sm(&h100, 182, 128, 34_824), 8);
        // 184 registers × 256 threads: 5,888 registers a warp, 11 warps fit, one block of 8.
        assert_eq!(warps_per_sm(&h100, 184, 256, 34_832), 8);
        // 128 registers × 256 threads: two blocks (16 warps), a third would need 96 K registers.
        assert_eq!(warps_per_sm(&h100, 128, 256, 1_000), 16);
        // Shared memory binds: 100 KB blocks, two fit in 228 KB.
        assert_eq!(warps_per_sm(&h100, 32, 128, 100_368), 8);
        // Threads bind: 2,048 per SM.
        assert_eq!(warps_per_sm(&h100, 16, 1024, 0), 64);
        // Too much shared memory for one block.
        assert_eq!(warps_per_sm(&limits("sm_86").unwrap(), 32, 128, 125 * 1024), 0);
        assert!(limits("sm_75").is_none());
    }
}
