"""The Mamba-2 selective scan (state-space duality, SSD) in plain PyTorch.

One head h with head dim P and state size N follows, for t = 0..L-1,

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        h_t: [P, N]
    y_t = h_t C_t                                           y_t: [P]

with a scalar A < 0 per head (A times identity) and B_t, C_t shared by the heads of one group.
`ssd_naive_scan` runs that recurrence step by step (the reference); `ssd_chunked_scan` computes
the same thing in chunks: inside a chunk the output is a masked, decay-weighted "attention"
(quadratic in the chunk size), and only one state per chunk is carried across chunks, so the
cost is linear in L. `ssd_scan` dispatches to mamba_ssm's fused kernel on CUDA when installed.

Shapes (the layout of mamba_ssm's `mamba_chunk_scan_combined`):
    x [B, L, H, P], dt [B, L, H] (already positive: softplus and bias applied), A [H],
    B and C [B, L, G, N] with H divisible by G, states [B, H, P, N].
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional CUDA fast path; everything works without it
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except Exception:  # ImportError, or a broken triton/CUDA install on a CPU box
    mamba_chunk_scan_combined = None

ScanBackend = Literal["auto", "torch", "mamba_ssm"]


def _check_scan_inputs(
    x: Tensor,  # [B, L, H, P]
    dt: Tensor,  # [B, L, H]
    A: Tensor,  # [H]
    B: Tensor,  # [B, L, G, N]
    C: Tensor,  # [B, L, G, N]
    initial_state: Tensor | None,  # [B, H, P, N]
) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be [batch, length, heads, headdim], got shape {tuple(x.shape)}")
    b, L, h, p = x.shape
    if dt.shape != (b, L, h):
        raise ValueError(f"dt must be [batch, length, heads] = {(b, L, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"A must hold one scalar per head, shape {(h,)}, got {tuple(A.shape)}")
    if B.ndim != 4 or B.shape[:2] != (b, L) or B.shape != C.shape:
        raise ValueError(
            f"B and C must both be [batch, length, groups, d_state] with batch, length = {(b, L)}; "
            f"got B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if h % B.shape[2] != 0:
        raise ValueError(f"heads ({h}) must be divisible by groups ({B.shape[2]}); change ngroups")
    if initial_state is not None and initial_state.shape != (b, h, p, B.shape[3]):
        raise ValueError(
            f"initial_state must be [batch, heads, headdim, d_state] = {(b, h, p, B.shape[3])}, "
            f"got {tuple(initial_state.shape)}"
        )


def ssd_naive_scan(
    x: Tensor,  # [B, L, H, P]
    dt: Tensor,  # [B, L, H]
    A: Tensor,  # [H]
    B: Tensor,  # [B, L, G, N]
    C: Tensor,  # [B, L, G, N]
    initial_state: Tensor | None = None,  # [B, H, P, N]
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:  # y [B, L, H, P] (, final state [B, H, P, N])
    """The recurrence one step at a time: O(L) sequential steps, the reference for tests."""
    _check_scan_inputs(x, dt, A, B, C, initial_state)
    b, L, h, p = x.shape
    repeat = h // B.shape[2]
    B_h = B.repeat_interleave(repeat, dim=2)  # [B, L, H, N]
    C_h = C.repeat_interleave(repeat, dim=2)
    state = x.new_zeros(b, h, p, B.shape[3]) if initial_state is None else initial_state
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # [B, H, 1, 1]
        update = (dt[:, t, :, None] * x[:, t])[..., None] * B_h[:, t, :, None, :]  # [B, H, P, N]
        state = decay * state + update
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C_h[:, t]))
    y = torch.stack(ys, dim=1)
    return (y, state) if return_final_state else y


def segment_sum(a: Tensor) -> Tensor:  # [..., T] -> [..., T, T]
    """out[..., i, j] = a[j+1] + ... + a[i] for i >= j, -inf above the diagonal.

    Built by masked cumulative sums rather than cumsum(a)[i] - cumsum(a)[j], which loses precision
    when the running sum is large compared with the segment.
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    per_step = a[..., :, None].expand(*a.shape, T)  # per_step[..., k, j] = a[k]
    sums = per_step.masked_fill(~ones.tril(-1), 0.0).cumsum(dim=-2)  # keep k > j, sum k <= i
    return sums.masked_fill(~ones.tril(0), float("-inf"))


def ssd_chunked_scan(
    x: Tensor,  # [B, L, H, P]
    dt: Tensor,  # [B, L, H]
    A: Tensor,  # [H]
    B: Tensor,  # [B, L, G, N]
    C: Tensor,  # [B, L, G, N]
    chunk_size: int,
    initial_state: Tensor | None = None,  # [B, H, P, N]
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:  # y [B, L, H, P] (, final state [B, H, P, N])
    """The chunked SSD algorithm: exact (same maths as `ssd_naive_scan`), linear in L."""
    _check_scan_inputs(x, dt, A, B, C, initial_state)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    out_dtype = x.dtype
    # Decays are exponentials of long sums: never accumulate them in half precision.
    work = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(work) for t in (x, dt, A, B, C))
    b, L, h, p = x.shape
    g, n = B.shape[2:]
    r = h // g
    # Zero padding is exact: dt = 0 means no decay (exp 0 = 1) and no input, so the padded
    # steps change neither the outputs we keep nor the final state.
    pad = (-L) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    nc, cs = (L + pad) // chunk_size, chunk_size
    # Heads are split as (group, head-in-group) so B and C are never copied per head.
    xc = x.reshape(b, nc, cs, g, r, p)
    dtc = dt.reshape(b, nc, cs, g, r)
    Bc = B.reshape(b, nc, cs, g, n)
    Cc = C.reshape(b, nc, cs, g, n)
    dA = dtc * A.reshape(g, r)  # [b, c, l, g, r], log-decay of each step
    dA_cumsum = dA.cumsum(dim=2)
    x_dt = xc * dtc[..., None]  # [b, c, l, g, r, p]

    # 1) inside each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(dA_{s+1} + .. + dA_l) dt_s x_s
    decay_in_chunk = torch.exp(segment_sum(dA.permute(0, 1, 3, 4, 2)))  # [b, c, g, r, l, s]
    scores = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)[:, :, :, None] * decay_in_chunk
    y = torch.einsum("bcgrls,bcsgrp->bclgrp", scores, x_dt)

    # 2) each chunk's own contribution to the state at its end
    decay_to_end = torch.exp(dA_cumsum[:, :, -1:] - dA_cumsum)  # [b, c, l, g, r]
    chunk_states = torch.einsum("bclgn,bclgrp->bcgrpn", Bc, x_dt * decay_to_end[..., None])

    # 3) pass states across chunks: one cheap step per chunk keeps the cost linear in L
    chunk_decay = torch.exp(dA_cumsum[:, :, -1])[..., None, None]  # [b, c, g, r, 1, 1]
    if initial_state is None:
        state = x.new_zeros(b, g, r, p, n)
    else:
        state = initial_state.to(work).reshape(b, g, r, p, n)
    states_in = []
    for c in range(nc):
        states_in.append(state)
        state = chunk_decay[:, c] * state + chunk_states[:, c]
    prev_states = torch.stack(states_in, dim=1)  # [b, c, g, r, p, n], state entering chunk c

    # 4) the carried-in state seen from every position, decayed from the chunk start
    y_carried = torch.einsum("bclgn,bcgrpn->bclgrp", Cc, prev_states)
    y = y + y_carried * torch.exp(dA_cumsum)[..., None]

    y = y.reshape(b, nc * cs, h, p)[:, :L].to(out_dtype)
    if return_final_state:
        return y, state.reshape(b, h, p, n).to(out_dtype)
    return y


def mamba_ssm_available() -> bool:
    return mamba_chunk_scan_combined is not None


def ssd_scan(
    x: Tensor,  # [B, L, H, P]
    dt: Tensor,  # [B, L, H]
    A: Tensor,  # [H]
    B: Tensor,  # [B, L, G, N]
    C: Tensor,  # [B, L, G, N]
    chunk_size: int,
    backend: ScanBackend = "auto",
) -> Tensor:  # [B, L, H, P]
    """`ssd_chunked_scan`, or mamba_ssm's fused Triton kernel when asked / when "auto" can."""
    if backend not in ("auto", "torch", "mamba_ssm"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'mamba_ssm', got {backend!r}")
    use_kernel = backend == "mamba_ssm" or (
        backend == "auto" and mamba_ssm_available() and x.is_cuda
    )
    if use_kernel:
        if not mamba_ssm_available():
            raise ValueError(
                "backend='mamba_ssm' needs `pip install mamba-ssm`; or use backend='torch'"
            )
        if not x.is_cuda:
            raise ValueError("backend='mamba_ssm' needs CUDA tensors; use backend='torch' on CPU")
        _check_scan_inputs(x, dt, A, B, C, None)
        return mamba_chunk_scan_combined(
            *(t.contiguous() for t in (x, dt, A, B, C)), chunk_size
        )
    return ssd_chunked_scan(x, dt, A, B, C, chunk_size)
