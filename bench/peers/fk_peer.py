#!/usr/bin/env python3
"""The PyTorch peer: the FK steering loop that flowsteer runs, written as a PyTorch user would.

What it computes is the default `flowsteer steer` run with `--sampler sde` (see the SPEC sections
cited inline): the velocity MLP loaded from the same safetensors file (docs/model.md), the marginal-form
midpoint SDE (§2), the point reward on x̂1 (§4), the `max` potential with its terminal correction,
multinomial resampling at the §7 schedule (§5-7). It does not draw Philox numbers, so runs agree with
flowsteer in distribution, not bit for bit.

Three variants, the ones a PyTorch user would reach for:
  eager    plain PyTorch ops in a Python loop;
  graphs   the whole run captured once as one CUDA graph and replayed (torch.cuda.graphs, GPU only);
  compile  torch.compile (inductor) of the integrator step and of the weigh+resample step.
All three share the same functions below; only how they are dispatched differs. The MLP folds
time into the first layer's bias (`W0·[t, x] + b0 = W0[:, 1:]·x + (b0 + t·W0[:, 0])`) so that no
step concatenates a time column: a cheap, honest speed-up a careful user would make; `--check`
verifies it against the plain nn.Sequential.

Output: one JSON object on stdout with particle-steps/s per variant and particle count
(particle-steps = particles × grid steps of one whole FK run, resampling included).

Usage:
  python3 bench/peers/fk_peer.py --model M.safetensors --particles 16384 --variants eager
  python3 bench/peers/fk_peer.py --device cuda --particles 1024,1048576 --variants eager,graphs,compile
Without --model a seeded random model of the default shape is used (and written with --save-model,
so that flowsteer can load the very same file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from particles import parse_particles  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The model file (docs/model.md): safetensors read with the standard library, so that the peer needs
# nothing beyond torch (the GPU machine has no network to install `safetensors`).

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_ACTIVATIONS = {
    "elu": lambda: nn.ELU(alpha=1.0),
    "silu": nn.SiLU,
    "gelu": lambda: nn.GELU(approximate="tanh"),
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (as f32) and the `__metadata__` map of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = memoryview(raw)[8 + header_len :]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name} has dtype {info['dtype']}; the peer reads F32, F16 and BF16 as flowsteer does")
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"]).float()
    return tensors, metadata


def load_sequential(path: str) -> nn.Sequential:
    """The nn.Sequential the file was saved from: Linear layers at their indices, the activation
    from the metadata (default ELU), shapes checked to chain as docs/model.md requires."""
    tensors, metadata = read_safetensors(path)
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        parts = name.rsplit(".", 2)
        if len(parts) < 2 or parts[-1] not in ("weight", "bias") or not parts[-2].isdigit():
            continue
        layers.setdefault(int(parts[-2]), {})[parts[-1]] = t
    if len(layers) < 2:
        raise ValueError(f"{path}: expected at least two Linear layers named <prefix>.<i>.weight/bias")
    act_name = metadata.get("activation", "elu").lower()
    if act_name not in _ACTIVATIONS:
        raise ValueError(f"{path}: unknown activation {act_name!r}; expected one of {sorted(_ACTIVATIONS)}")
    modules: list[nn.Module] = []
    ordered = [layers[i] for i in sorted(layers)]
    dim = ordered[-1]["weight"].shape[0]
    for li, tensors_i in enumerate(ordered):
        w, b = tensors_i["weight"], tensors_i["bias"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        modules.append(lin)
        if li + 1 < len(ordered):
            modules.append(_ACTIVATIONS[act_name]())
    if ordered[0]["weight"].shape[1] != dim + 1:
        raise ValueError(f"{path}: first layer takes {ordered[0]['weight'].shape[1]} inputs, expected D + 1 = {dim + 1}")
    return nn.Sequential(*modules)


def random_sequential(dim=2, hidden=64, hidden_layers=3, seed=0) -> nn.Sequential:
    """The default shape (docs/model.md) with PyTorch's default initialisation, seeded."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = [nn.Linear(dim + 1, hidden), nn.ELU()]
    for _ in range(hidden_layers - 1):
        mods += [nn.Linear(hidden, hidden), nn.ELU()]
    mods.append(nn.Linear(hidden, dim))
    return nn.Sequential(*mods)


def save_sequential(seq: nn.Sequential, path: str, activation: str = "elu") -> None:
    """Writes `seq` as safetensors in the nn.Sequential layout of docs/model.md (prefix `net`)."""
    header: dict = {"__metadata__": {"activation": activation}}
    blobs, offset = [], 0
    for name, t in seq.state_dict().items():
        b = t.detach().float().contiguous().cpu().numpy().tobytes() if _has_numpy() else _tensor_bytes(t)
        header[f"net.{name}"] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    os.replace(tmp, path)


def _has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().float().contiguous().cpu().reshape(-1).tolist()
    return struct.pack(f"<{len(flat)}f", *flat)


class Velocity(nn.Module):
    """v(t, x) with t folded into the first layer's bias (see the module docstring)."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        linears = [m for m in seq if isinstance(m, nn.Linear)]
        self.act = next(m for m in seq if not isinstance(m, nn.Linear))
        first = linears[0]
        self.w0t = nn.Parameter(first.weight[:, 0].detach().clone(), requires_grad=False)
        self.w0x = nn.Parameter(first.weight[:, 1:].detach().t().contiguous(), requires_grad=False)
        self.b0 = nn.Parameter(first.bias.detach().clone(), requires_grad=False)
        self.rest = nn.ModuleList(linears[1:])

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.act(torch.addmm(self.b0 + t * self.w0t, x, self.w0x))
        for i, lin in enumerate(self.rest):
            h = lin(h)
            if i + 1 < len(self.rest):
                h = self.act(h)
        return h


# ---------------------------------------------------------------------------------------------
# The run's configuration: `flowsteer steer`'s defaults with the SDE sampler (issue 3, docs/samplers.md, docs/random.md, docs/rewards.md, docs/steering.md, docs/resampling.md, docs/schedules.md).


@dataclass
class FkConfig:
    steps: int = 100
    k: float = 0.1
    lam: float = 10.0
    r_min: float = 0.0
    target: tuple = (2.0, 0.5)
    eps: float = 1e-3
    t_start: float = 0.6
    t_end: float = 0.95
    count: int = 5
    schedule: list = field(default_factory=list)

    def __post_init__(self):
        if not self.schedule:
            self.schedule = resampling_steps(self.steps, self.t_start, self.t_end, self.count)


def resampling_steps(n: int, t_start: float, t_end: float, count: int) -> list[int]:
    """docs/schedules.md: grid indices nearest to t_start + j·(t_end − t_start)/count, j < count, then n."""
    steps = [int(math.floor((t_start + j * (t_end - t_start) / count) * n + 0.5)) for j in range(count)]
    steps = sorted({s for s in steps if 0 < s < n})
    return steps + [n]


def point_reward(x: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """docs/rewards.md point(c): 1 / (|x − c|² + eps)."""
    return 1.0 / ((x - target).square().sum(dim=1) + eps)


def sde_step(vel: Velocity, x: torch.Tensor, t: torch.Tensor, h: float, k: float) -> torch.Tensor:
    """One marginal-form SDE step (docs/samplers.md):
    x + h·[vm + (k/2)(t·v0 − x)] + sqrt(k(1−t)h)·ξ, vm = v(t + h/2, x + (h/2)·v0)."""
    v0 = vel(t, x)
    vm = vel(t + 0.5 * h, x + (0.5 * h) * v0)
    noise = torch.randn_like(x)
    return x + h * (vm + (0.5 * k) * (t * v0 - x)) + torch.sqrt(k * (1.0 - t) * h) * noise


def weigh(vel, x, m, acc, t: float, is_final: bool, cfg: FkConfig, target):
    """docs/steering.md for `max`: returns (log-weight, new running max, new Σ log G). Rewards on x̂1 at
    intermediate steps, on the sample at the final one (terminal correction λ·r_K − Σ log G)."""
    if is_final:
        r = point_reward(x, target, cfg.eps)
    else:
        tt = torch.full((), t, device=x.device)
        r = point_reward(x + (1.0 - t) * vel(tt, x), target, cfg.eps)
    bad = torch.isnan(r) | torch.isposinf(r)
    if is_final:
        log_w = cfg.lam * r - acc
    else:
        m = torch.maximum(m, r)
        log_w = cfg.lam * m
        acc = acc + log_w
    log_w = torch.where(bad, torch.full_like(log_w, -math.inf), log_w)
    return log_w, m, acc


def normalise(log_w: torch.Tensor):
    """Weights / max, ESS and the log Ẑ increment log(mean w) (weights carried in are uniform after a
    resampling); every weight −inf gives uniform weights (docs/steering.md). No host sync."""
    mx = log_w.max()
    all_bad = torch.isneginf(mx)
    w = torch.where(all_bad, torch.ones_like(log_w), torch.exp(log_w - torch.where(all_bad, torch.zeros_like(mx), mx)))
    s = w.sum(dtype=torch.float64)
    ess = s * s / (w.double().square().sum())
    log_z_inc = torch.log(s / w.numel()) + torch.where(all_bad, torch.zeros_like(mx), mx).double()
    return w, ess, log_z_inc


def multinomial_ancestors(w: torch.Tensor) -> torch.Tensor:
    """i.i.d. ancestors from w by inverting the f64 CDF at N uniforms (exact multinomial; capturable
    in a CUDA graph, unlike torch.multinomial's host-side checks)."""
    cdf = torch.cumsum(w.double(), 0)
    u = torch.rand(w.numel(), dtype=torch.float64, device=w.device) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=w.numel() - 1)


def weigh_resample(vel, x, m, acc, t: float, cfg: FkConfig, target):
    """An intermediate resampling point: weigh, then resample and gather every per-particle state."""
    log_w, m, acc = weigh(vel, x, m, acc, t, False, cfg, target)
    w, ess, log_z_inc = normalise(log_w)
    a = multinomial_ancestors(w)
    return x[a], m[a], acc[a], ess, log_z_inc


def weigh_final(vel, x, m, acc, cfg: FkConfig, target):
    log_w, _, _ = weigh(vel, x, m, acc, 1.0, True, cfg, target)
    _, ess, log_z_inc = normalise(log_w)
    return log_w, ess, log_z_inc


# ---------------------------------------------------------------------------------------------
# One whole FK run; `step_fn`/`resample_fn` are the eager functions or their compiled versions.


class FkRun:
    def __init__(self, vel: Velocity, n_particles: int, cfg: FkConfig, device, step_fn=None, resample_fn=None):
        self.vel, self.n, self.cfg, self.device = vel, n_particles, cfg, device
        self.step_fn = step_fn or sde_step
        self.resample_fn = resample_fn or weigh_resample
        self.target = torch.tensor(cfg.target, device=device)
        # Times as 0-d device tensors, made once: compiled code sees one tensor input, not a new
        # constant per step (which would recompile), and graph capture needs no host->device copy.
        self.times = [torch.full((), i / cfg.steps, device=device) for i in range(cfg.steps)]
        dim = vel.w0x.shape[0]
        self.x0 = torch.empty(n_particles, dim, device=device)

    def new_noise(self):
        self.x0.normal_()

    def __call__(self, nvtx: bool = False):
        """Runs from self.x0; returns (x, final log-weights, ESS per point, log Ẑ) as tensors.
        With `nvtx` (eager only) each primitive runs inside the NVTX range flowsteer uses for it
        (bench/PROFILING.md): propagate per interval, potential, resample, gather."""
        cfg, h = self.cfg, 1.0 / self.cfg.steps
        rng = _nvtx_range if nvtx else _no_range
        x = self.x0.clone()
        m = torch.full((self.n,), cfg.r_min, device=self.device)
        acc = torch.zeros(self.n, device=self.device)
        ess, log_z = [], torch.zeros((), dtype=torch.float64, device=self.device)
        start = 0
        for point in cfg.schedule:
            with rng("propagate"):
                for i in range(start, point):
                    x = self.step_fn(self.vel, x, self.times[i], h, cfg.k)
            start = point
            if point == cfg.steps:
                break
            t = point / cfg.steps
            if nvtx:
                with rng("potential"):
                    log_w, m, acc = weigh(self.vel, x, m, acc, t, False, cfg, self.target)
                    w, e, lz = normalise(log_w)
                with rng("resample"):
                    a = multinomial_ancestors(w)
                with rng("gather"):
                    x, m, acc = x[a], m[a], acc[a]
            else:
                x, m, acc, e, lz = self.resample_fn(self.vel, x, m, acc, t, cfg, self.target)
            ess.append(e)
            log_z = log_z + lz
        with rng("potential"):
            log_w, e, lz = weigh_final(self.vel, x, m, acc, cfg, self.target)
        ess.append(e)
        return x, log_w, torch.stack(ess), log_z + lz


class _no_range:
    def __init__(self, name):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _nvtx_range(_no_range):
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        torch.cuda.nvtx.range_push(self.name)
        return self

    def __exit__(self, *exc):
        torch.cuda.nvtx.range_pop()
        return False


def summarise(x, log_w, ess, log_z, cfg: FkConfig) -> dict:
    """Final-sample statistics as flowsteer's summary reports them (reward, within 0.25 of target)."""
    target = torch.tensor(cfg.target, device=x.device)
    r = point_reward(x, target, cfg.eps)
    within = ((x - target).square().sum(1) <= 0.25**2).float()
    return {
        "final_reward_mean": r.mean().item(),
        "fraction_within_0.25": within.mean().item(),
        "ess": [round(v, 2) for v in ess.tolist()],
        "log_z": log_z.item(),
    }


# ---------------------------------------------------------------------------------------------
# Variants and timing.


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def bench_variant(variant: str, vel: Velocity, n: int, cfg: FkConfig, device, repeats: int, warmup: int, compile_mode: str,
                  nvtx: bool = False):
    """Times whole FK runs of one variant: `warmup` untimed runs, then `repeats` timed ones.
    Returns the record for the JSON output."""
    setup_s = 0.0
    if nvtx and variant != "eager":
        raise SystemExit("--nvtx marks the primitives of the eager variant only: use --variants eager")
    if variant == "eager":
        run = FkRun(vel, n, cfg, device)

        def once():
            run.new_noise()
            return run(nvtx)

    elif variant == "compile":
        torch._dynamo.reset()  # a fresh cache per particle count: no silent fallback to eager
        kw = dict(fullgraph=True, dynamic=False, mode=compile_mode)
        step_c = torch.compile(sde_step, **kw)
        res_c = torch.compile(weigh_resample, **kw)
        run = FkRun(vel, n, cfg, device, step_c, res_c)

        def once():
            run.new_noise()
            return run()

        t0 = time.perf_counter()
        once()  # compiles every specialisation (step, and each resampling time)
        sync(device)
        setup_s = time.perf_counter() - t0
    elif variant == "graphs":
        if device.type != "cuda":
            raise SystemExit("the `graphs` variant needs --device cuda (CUDA graphs exist only on the GPU)")
        run = FkRun(vel, n, cfg, device)
        t0 = time.perf_counter()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside capture, as torch.cuda.graphs requires
            run.new_noise()
            run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run.new_noise()
            out = run()
        sync(device)
        setup_s = time.perf_counter() - t0

        def once():
            graph.replay()
            return out

    else:
        raise SystemExit(f"unknown variant {variant!r}; expected eager, graphs or compile")

    for _ in range(warmup):
        once()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = once()
        sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rec = {
        "variant": variant,
        "particles": n,
        "steps": cfg.steps,
        "repeats": repeats,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "setup_s": setup_s,
        "particle_steps_per_s": n * cfg.steps / med,
        # 2 evaluations per SDE step + 1 per intermediate resampling point (reward on x̂1).
        "nfe_per_particle": 2 * cfg.steps + len(cfg.schedule) - 1,
    }
    rec.update(summarise(*res, cfg))
    return rec


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def check_model(seq: nn.Sequential, vel: Velocity) -> float:
    """Largest |difference| between the folded velocity and nn.Sequential on [t, x]."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(257, vel.w0x.shape[0], generator=g)
    worst = 0.0
    with torch.no_grad():
        for t in (0.0, 0.37, 1.0):
            ref = seq(torch.cat([torch.full((x.shape[0], 1), t), x], 1))
            got = vel.cpu()(torch.tensor(t), x)
            worst = max(worst, (ref - got).abs().max().item())
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="safetensors model file (docs/model.md); default: a seeded random model of the default shape")
    ap.add_argument("--save-model", help="write the model used to this path (safetensors, nn.Sequential layout) and continue")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--particles", default="16384", help="a list: 1024,4096 or a range 2^10..2^14 (powers of two)")
    ap.add_argument("--variants", default="eager", help="comma list of eager, graphs, compile")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--k", type=float, default=0.1, help="SDE diffusion scale")
    ap.add_argument("--lam", type=float, default=10.0, help="λ of the max potential")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, max-autotune...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nvtx", action="store_true", help="NVTX ranges propagate/potential/resample/gather (eager, CUDA)")
    ap.add_argument("--check", action="store_true", help="check the folded MLP against nn.Sequential and exit")
    args = ap.parse_args(argv)

    try:
        counts = parse_particles(args.particles)
    except ValueError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device; run on the GPU machine or use --device cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 like flowsteer's kernels
    torch.backends.cudnn.allow_tf32 = False

    seq = load_sequential(args.model) if args.model else random_sequential(seed=args.seed)
    if args.save_model:
        save_sequential(seq, args.save_model)
    vel = Velocity(seq)
    if args.check:
        err = check_model(seq, vel)
        print(json.dumps({"check": "folded velocity vs nn.Sequential", "max_abs_diff": err}))
        return 0 if err < 1e-5 else 1
    vel = vel.to(device).eval()
    cfg = FkConfig(steps=args.steps, k=args.k, lam=args.lam)
    torch.manual_seed(args.seed)

    results = []
    for n in counts:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            try:
                rec = bench_variant(variant, vel, n, cfg, device, args.repeats, args.warmup, args.compile_mode, args.nvtx)
            except Exception as e:  # one failing variant (no compiler, out of memory) must not hide the rest
                print(f"{variant:8s} N={n:>9d}  FAILED: {type(e).__name__}: {e}", file=sys.stderr)
                results.append({"variant": variant, "particles": n, "error": f"{type(e).__name__}: {e}"[:2000]})
                continue
            results.append(rec)
            print(f"{variant:8s} N={n:>9d}  {rec['particle_steps_per_s']:.4g} particle-steps/s  "
                  f"(median {rec['median_s']:.4g} s, setup {rec['setup_s']:.3g} s)", file=sys.stderr)
    print(json.dumps({
        "peer": "pytorch",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "device_type": device.type,
        "model": args.model or f"random(seed={args.seed})",
        "config": {"sampler": "sde (marginal form)", "steps": cfg.steps, "k": cfg.k, "potential": "max",
                   "lambda": cfg.lam, "reward": f"point({list(cfg.target)})", "resample": "multinomial",
                   "schedule": cfg.schedule},
        "results": results,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
