// emulator.hpp — runs the kernels of kernels/*.cu on the host, for testing the CUDA backend on a
// machine without a GPU (src/backend/cuda/emulator.rs compiles each module with this header in
// front of it, as C++ with g++, into a shared library it loads).
//
// What it emulates: the CUDA execution model the kernels rely on, and nothing more. Each block's
// threads are fibers (ucontext) run one at a time on one OS thread, so a launch is deterministic.
//   __syncthreads()      every thread of the block that has not exited waits (sm_70+ semantics),
//                        all at the same __syncthreads (threads at different ones fail the launch:
//                        CUDA leaves a barrier in divergent code undefined);
//   __shfl_*_sync(full)  every lane of the warp exchanges; a lane that has exited or does not
//                        exist makes the launch fail (undefined on a GPU, so a bug to report);
//   __shared__           one static object per declaration, shared by the block (blocks run one
//                        after another); `extern __shared__` arrays are rewritten by the loader to
//                        point at the launch's dynamic shared memory, filled with 0xFF bytes (NaN
//                        as floats) so that a read before a write shows;
//   atomics              plain read-modify-writes (only one fiber runs at a time).
// A launch that cannot finish (some threads at __syncthreads, others at a shuffle or another
// barrier) fails with the state of every waiting thread, like compute-sanitizer's synccheck.
//
// What it does not: timing, the memory model (there are no data races between fibers that
// switch only at barriers), out-of-bounds checks, and CUDA's own transcendental functions
// (logf, sincosf, expf, exp here are glibc's: within an ulp or two of CUDA's, as the GPU tests'
// tolerances already allow). Arithmetic is IEEE f32/f64 with no contraction (-ffp-contract=off,
// like the modules' --fmad=false), so the MLP and the rewards are bitwise what a GPU computes.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

static dim3 threadIdx, blockIdx, blockDim, gridDim;

// The vector types the kernels use, with CUDA's alignment.
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};

// ---- bit casts and integer intrinsics ----
template <class To, class From>
inline To fs_emu_bit_cast(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit casts keep the size");
    To r;
    memcpy(&r, &v, sizeof r);
    return r;
}
inline float __int_as_float(int v) { return fs_emu_bit_cast<float>(v); }
inline int __float_as_int(float v) { return fs_emu_bit_cast<int>(v); }
inline float __uint_as_float(unsigned int v) { return fs_emu_bit_cast<float>(v); }
inline unsigned int __float_as_uint(float v) { return fs_emu_bit_cast<unsigned int>(v); }
inline double __longlong_as_double(long long v) { return fs_emu_bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return fs_emu_bit_cast<long long>(v); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned int)(((unsigned long long)a * b) >> 32); }

// CUDA's integer min/max overloads (mixed operands convert as in C++ arithmetic).
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
    using T = std::common_type_t<A, B>;
    return (T)a < (T)b ? (T)a : (T)b;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
    using T = std::common_type_t<A, B>;
    return (T)a < (T)b ? (T)b : (T)a;
}

template <class T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}

namespace fs_emu {

enum class State { Runnable, AtBarrier, AtShuffle, Exited };
enum class Shuffle { Down, Up, Xor, Index };

struct Thread {
    ucontext_t context;
    State state = State::Runnable;
    dim3 index;
    unsigned long long value = 0, result = 0;  // a shuffle's operand and result (raw bits)
    Shuffle op = Shuffle::Down;
    int operand = 0;
    int barrier_line = 0;  // the source line of the __syncthreads it waits at
};

struct Block {
    std::vector<Thread> threads;
    ucontext_t scheduler;
    size_t current = 0;
    std::string error;
};

static Block* g_block = nullptr;
static std::function<void()> g_body;
static std::vector<unsigned char> g_dynamic_shared;
static std::vector<void*> g_stacks;
static const size_t STACK_BYTES = 256 * 1024;

inline void* dynamic_shared() { return g_dynamic_shared.data(); }

inline Thread& current() { return g_block->threads[g_block->current]; }

inline void yield() { swapcontext(&current().context, &g_block->scheduler); }

// Stops the launch from inside a thread: records why and never resumes it.
inline void fail(const std::string& why) {
    if (g_block->error.empty()) g_block->error = why;
    current().state = State::Exited;
    yield();
}

inline void entry(int index) {
    g_body();
    g_block->threads[(size_t)index].state = State::Exited;
    // Returning resumes the scheduler through uc_link.
}

template <class T>
inline T shuffle(unsigned int mask, T value, Shuffle op, int operand, int width) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    if (mask != 0xffffffffu || width != 32) {
        fail("a shuffle with a partial mask or a width other than 32 (the emulator supports full warps only)");
    }
    Thread& t = current();
    t.value = 0;
    memcpy(&t.value, &value, sizeof(T));
    t.op = op;
    t.operand = operand;
    t.state = State::AtShuffle;
    yield();
    T out;
    memcpy(&out, &current().result, sizeof(T));
    return out;
}

inline std::string describe(const Thread& t) {
    const char* s = t.state == State::AtBarrier ? "at the __syncthreads of line" : t.state == State::AtShuffle ? "at a shuffle" : "exited";
    char buf[96];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u) %s", t.index.x, t.index.y, t.index.z, s);
    return t.state == State::AtBarrier ? buf + (" " + std::to_string(t.barrier_line)) : std::string(buf);
}

// Releases the warps whose live lanes all wait at a shuffle; returns whether any was released.
inline bool release_warps(Block& b) {
    bool released = false;
    const size_t n = b.threads.size();
    for (size_t w = 0; w * 32 < n; ++w) {
        const size_t lo = w * 32, hi = lo + 32 < n ? lo + 32 : n;
        bool any = false, all = true;
        for (size_t i = lo; i < hi; ++i) {
            any |= b.threads[i].state == State::AtShuffle;
            all &= b.threads[i].state == State::AtShuffle || b.threads[i].state == State::Exited;
        }
        if (!any || !all) continue;
        for (size_t i = lo; i < lo + 32; ++i) {
            if (i >= hi || b.threads[i].state == State::Exited) {
                b.error = "a full-warp shuffle in warp " + std::to_string(w) + " while lane " + std::to_string(i - lo) +
                          (i >= hi ? " does not exist (block size not a multiple of 32)" : " has exited");
                return false;
            }
        }
        for (size_t i = lo; i < hi; ++i) {
            Thread& t = b.threads[i];
            const long lane = (long)(i - lo);
            long src = lane;
            switch (t.op) {
                case Shuffle::Down: src = lane + t.operand < 32 ? lane + t.operand : lane; break;
                case Shuffle::Up: src = lane - t.operand >= 0 ? lane - t.operand : lane; break;
                case Shuffle::Xor: src = lane ^ t.operand; break;
                case Shuffle::Index: src = t.operand & 31; break;
            }
            t.result = b.threads[lo + (size_t)src].value;
        }
        for (size_t i = lo; i < hi; ++i) b.threads[i].state = State::Runnable;
        released = true;
    }
    return released;
}

// Runs one block to completion; returns an error or "".
inline std::string run_block(size_t count) {
    while (g_stacks.size() < count) g_stacks.push_back(malloc(STACK_BYTES));
    Block b;
    b.threads.resize(count);
    for (size_t i = 0; i < count; ++i) {
        Thread& t = b.threads[i];
        t.index.x = (unsigned int)(i % blockDim.x);
        t.index.y = (unsigned int)(i / blockDim.x % blockDim.y);
        t.index.z = (unsigned int)(i / blockDim.x / blockDim.y);
        getcontext(&t.context);
        t.context.uc_stack.ss_sp = g_stacks[i];
        t.context.uc_stack.ss_size = STACK_BYTES;
        t.context.uc_link = &b.scheduler;
        makecontext(&t.context, (void (*)())entry, 1, (int)i);
    }
    g_block = &b;
    for (;;) {
        bool ran = false;
        for (size_t i = 0; i < count; ++i) {
            if (b.threads[i].state != State::Runnable) continue;
            b.current = i;
            threadIdx = b.threads[i].index;
            swapcontext(&b.scheduler, &b.threads[i].context);
            ran = true;
            if (!b.error.empty()) return b.error;
        }
        size_t exited = 0, at_barrier = 0;
        for (const Thread& t : b.threads) {
            exited += t.state == State::Exited;
            at_barrier += t.state == State::AtBarrier;
        }
        if (exited == count) return "";
        bool released = release_warps(b);
        if (!b.error.empty()) return b.error;
        if (!released && at_barrier + exited == count) {
            const Thread* first = nullptr;
            for (Thread& t : b.threads) {
                if (t.state != State::AtBarrier) continue;
                if (first && t.barrier_line != first->barrier_line)
                    return "divergent __syncthreads: " + describe(*first) + ", " + describe(t);
                if (!first) first = &t;
            }
            for (Thread& t : b.threads)
                if (t.state == State::AtBarrier) t.state = State::Runnable;
            released = true;
        }
        if (!ran && !released) {
            std::string why = "deadlock: no thread can go on (";
            size_t listed = 0;
            for (const Thread& t : b.threads) {
                if (t.state == State::Exited || listed == 8) continue;
                why += (listed++ ? "; " : "") + describe(t);
            }
            return why + ")";
        }
    }
}

template <class... A, size_t... I>
inline void call_with(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*reinterpret_cast<std::remove_cv_t<A>*>(args[I])...);
}

// Runs a whole grid; the arguments are as cuLaunchKernel takes them (pointers to each value).
template <class... A>
inline int launch(void (*kernel)(A...), const unsigned int* grid, const unsigned int* block, unsigned int shared_bytes,
                  void** args, char* error, size_t error_len) {
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    g_dynamic_shared.assign(shared_bytes + 16, 0xFF);
    g_body = [=] { call_with(kernel, args, std::index_sequence_for<A...>{}); };
    const size_t threads = (size_t)block[0] * block[1] * block[2];
    for (unsigned int z = 0; z < grid[2]; ++z)
        for (unsigned int y = 0; y < grid[1]; ++y)
            for (unsigned int x = 0; x < grid[0]; ++x) {
                blockIdx = dim3{x, y, z};
                const std::string e = run_block(threads);
                if (!e.empty()) {
                    snprintf(error, error_len, "block (%u,%u,%u): %s", x, y, z, e.c_str());
                    return 1;
                }
            }
    return 0;
}

}  // namespace fs_emu

namespace fs_emu {
inline void sync_threads(int line) {
    current().state = State::AtBarrier;
    current().barrier_line = line;
    yield();
}
}  // namespace fs_emu

// A macro, so that each call site is told apart by its line.
#define __syncthreads() fs_emu::sync_threads(__LINE__)

template <class T>
inline T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    return fs_emu::shuffle(mask, v, fs_emu::Shuffle::Down, (int)delta, width);
}
template <class T>
inline T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    return fs_emu::shuffle(mask, v, fs_emu::Shuffle::Up, (int)delta, width);
}
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
    return fs_emu::shuffle(mask, v, fs_emu::Shuffle::Xor, lane_mask, width);
}
template <class T>
inline T __shfl_sync(unsigned int mask, T v, int src_lane, int width = 32) {
    return fs_emu::shuffle(mask, v, fs_emu::Shuffle::Index, src_lane, width);
}
