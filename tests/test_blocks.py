"""Decoder token-mixing blocks: SSD scan, Mamba-2, attention, the patterned stack."""

from __future__ import annotations

import copy

import pytest
import torch

from lyra.models.blocks import (
    AttentionBlock,
    BiMamba2Block,
    BlockStack,
    BodyConfig,
    GatedRMSNorm,
    Mamba2,
    mamba_ssm_available,
    parse_block_pattern,
    segment_sum,
    ssd_chunked_scan,
    ssd_naive_scan,
    ssd_scan,
)
from lyra.models.blocks.mamba2 import causal_depthwise_conv1d

F64 = torch.float64


def random_scan_inputs(b=2, L=29, h=4, p=3, g=2, n=5, dtype=F64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, h, p, generator=gen, dtype=dtype)
    dt = torch.rand(b, L, h, generator=gen, dtype=dtype) * 0.9 + 0.05
    A = -(torch.rand(h, generator=gen, dtype=dtype) * 3 + 0.1)
    B = torch.randn(b, L, g, n, generator=gen, dtype=dtype)
    C = torch.randn(b, L, g, n, generator=gen, dtype=dtype)
    state0 = torch.randn(b, h, p, n, generator=gen, dtype=dtype)
    return [t.to(device) for t in (x, dt, A, B, C, state0)]


def test_segment_sum_matches_definition():
    a = torch.randn(3, 6, dtype=F64)
    out = segment_sum(a)
    for i in range(6):
        for j in range(6):
            above_diagonal = torch.full((3,), float("-inf"), dtype=F64)
            expected = a[:, j + 1 : i + 1].sum(-1) if i >= j else above_diagonal
            torch.testing.assert_close(out[:, i, j], expected)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 16, 29, 64])  # 4, 7, 16 do not divide L=29
@pytest.mark.parametrize("ngroups", [1, 2, 4])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_scan_equals_naive_forward(chunk_size, ngroups, with_state):
    x, dt, A, B, C, s0 = random_scan_inputs(g=ngroups)
    s0 = s0 if with_state else None
    y_ref, last_ref = ssd_naive_scan(x, dt, A, B, C, s0, return_final_state=True)
    y, last = ssd_chunked_scan(x, dt, A, B, C, chunk_size, s0, return_final_state=True)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [3, 8, 32])
def test_chunked_scan_equals_naive_gradients(chunk_size):
    inputs = random_scan_inputs(L=21, g=2, seed=1)
    weights_y = torch.randn(2, 21, 4, 3, dtype=F64)
    weights_s = torch.randn(2, 4, 3, 5, dtype=F64)

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        y, last = fn(*leaves)
        ((y * weights_y).sum() + (last * weights_s).sum()).backward()
        return [t.grad for t in leaves]

    ref = grads(lambda *a: ssd_naive_scan(*a, return_final_state=True))
    got = grads(lambda *a: ssd_chunked_scan(*a[:5], chunk_size, a[5], return_final_state=True))
    for name, g_ref, g in zip(["x", "dt", "A", "B", "C", "initial_state"], ref, got):
        assert g_ref.abs().max() > 0, name
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0, msg=f"gradient of {name}")


def test_chunked_scan_low_precision_keeps_dtype_and_accuracy():
    x, dt, A, B, C, _ = random_scan_inputs(L=40)
    y_ref = ssd_naive_scan(x, dt, A, B, C)
    y = ssd_chunked_scan(x.float(), dt.float(), A.float(), B.float(), C.float(), 16)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, atol=1e-4, rtol=1e-4)


def test_scan_rejects_bad_inputs():
    x, dt, A, B, C, s0 = random_scan_inputs(g=2)
    with pytest.raises(ValueError, match="dt must be"):
        ssd_chunked_scan(x, dt[:, :-1], A, B, C, 8)
    with pytest.raises(ValueError, match="divisible by groups"):
        three_groups = [torch.cat([t, t[:, :, :1]], dim=2) for t in (B, C)]  # 4 heads, 3 groups
        ssd_chunked_scan(x, dt, A, *three_groups, 8)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked_scan(x, dt, A, B, C, 0)
    with pytest.raises(ValueError, match="initial_state"):
        ssd_chunked_scan(x, dt, A, B, C, 8, s0[..., :-1])
    if not (mamba_ssm_available() and torch.cuda.is_available()):
        with pytest.raises(ValueError, match="backend='torch'"):
            ssd_scan(x, dt, A, B, C, 8, backend="mamba_ssm")


def test_gated_rmsnorm_normalises_each_group_separately():
    norm = GatedRMSNorm(8, group_size=4)
    x, z = torch.randn(3, 8), torch.randn(3, 8)
    gated = x * torch.nn.functional.silu(z)
    groups = gated.view(3, 2, 4)
    expected = (groups / groups.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()).view(3, 8)
    torch.testing.assert_close(norm(x, z), expected)
    with pytest.raises(ValueError, match="group_size"):
        GatedRMSNorm(8, group_size=3)


def small_mamba_kwargs():
    return dict(d_state=8, expand=2, headdim=8, d_conv=4, ngroups=2, chunk_size=5)


def input_grad_of_first_output(module, x):  # [B, L, D] -> [L], |d out[:, 0] / d x[:, t]|
    x = x.clone().requires_grad_(True)
    module(x)[:, 0].sum().backward()
    return x.grad.abs().sum(dim=(0, 2))


def test_causal_depthwise_conv_equals_the_grouped_conv1d_reference():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, kernel_size=4, groups=6, padding=3).double()
    x = torch.randn(2, 11, 6, dtype=F64, requires_grad=True)
    ref = conv(x.transpose(1, 2))[..., :11].transpose(1, 2)
    got = causal_depthwise_conv1d(x, conv.weight, conv.bias)
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    grads = torch.autograd.grad(got, (x, conv.weight, conv.bias), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_unidirectional_mamba2_is_causal():
    torch.manual_seed(0)
    mixer = Mamba2(16, **small_mamba_kwargs())
    grad = input_grad_of_first_output(mixer, torch.randn(2, 12, 16))
    assert grad[0] > 0 and torch.all(grad[1:] == 0)
    # and the chunk size does not change the result (chunked scan is exact)
    other = copy.deepcopy(mixer)
    other.chunk_size = 64
    x = torch.randn(2, 12, 16)
    torch.testing.assert_close(mixer(x), other(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("combine", ["sum", "concat_linear"])
def test_bimamba_sees_later_tokens_and_is_direction_symmetric(combine):
    torch.manual_seed(0)
    block = BiMamba2Block(16, combine=combine, **small_mamba_kwargs())
    x = torch.randn(2, 12, 16)
    assert block(x).shape == x.shape
    grad = input_grad_of_first_output(block, x)
    assert grad[-1] > 0, "output at position 0 must depend on the last token"
    # Swapping the two directions' parameters and reversing the sequence must reverse the output.
    swapped = copy.deepcopy(block)
    swapped.forward_mixer.load_state_dict(block.backward_mixer.state_dict())
    swapped.backward_mixer.load_state_dict(block.forward_mixer.state_dict())
    if combine == "concat_linear":
        swapped.merge.weight.data = block.merge.weight.data.roll(16, dims=1)
    torch.testing.assert_close(swapped(x.flip(1)), block(x).flip(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="combine"):
        BiMamba2Block(16, combine="mean", **small_mamba_kwargs())


def test_mamba2_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, headdim=7)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, headdim=8, ngroups=3)


def test_attention_block_is_full_and_permutation_equivariant():
    torch.manual_seed(0)
    block = AttentionBlock(32, headdim=8)
    x = torch.randn(2, 10, 32)
    out = block(x)
    assert out.shape == x.shape
    assert input_grad_of_first_output(block, x)[-1] > 0, "no causal mask: token 0 sees the last"
    perm = torch.randperm(10)
    torch.testing.assert_close(block(x[:, perm]), out[:, perm], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="headdim"):
        AttentionBlock(30, headdim=8)


def test_pattern_parsing_and_errors():
    lyra = parse_block_pattern("MMMMMMMA", 16)
    assert [i + 1 for i, t in enumerate(lyra) if t == "A"] == [8, 16]
    assert parse_block_pattern("ma", 4) == ["M", "A", "M", "A"]
    assert parse_block_pattern("M", 3) == ["M"] * 3
    with pytest.raises(ValueError, match="multiple of the pattern length"):
        parse_block_pattern("MMMMMMMA", 12)
    with pytest.raises(ValueError, match="'M'"):
        parse_block_pattern("MMXA", 4)
    with pytest.raises(ValueError, match="non-empty"):
        parse_block_pattern("", 4)
    stack = BlockStack(BodyConfig(16, "MMA", 6, **small_mamba_kwargs(), attn_headdim=8))
    kinds = ["M" if isinstance(b, BiMamba2Block) else "A" for b in stack.blocks]
    assert kinds == list("MMAMMA") and isinstance(stack.blocks, torch.nn.ModuleList)
    out = stack(torch.randn(1, 9, 16))
    # the final LayerNorm (default affine init) leaves every token with zero mean, unit variance
    torch.testing.assert_close(out.mean(-1), torch.zeros(1, 9), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="tokens"):
        stack(torch.randn(9, 16))


def test_gradient_checkpointing_matches_plain_gradients():
    torch.manual_seed(0)
    plain = BlockStack(BodyConfig(16, "MA", 4, **small_mamba_kwargs(), attn_headdim=8)).double()
    ckpt = copy.deepcopy(plain)
    ckpt.gradient_checkpointing = True
    calls = []
    block_forward = ckpt.blocks[0].forward  # count calls (module hooks are skipped on recompute)
    ckpt.blocks[0].forward = lambda x: calls.append(1) or block_forward(x)
    x = torch.randn(2, 11, 16, dtype=F64)
    target = torch.randn(2, 11, 16, dtype=F64)
    for model in (plain, ckpt):
        ((model(x) - target) ** 2).sum().backward()
    assert len(calls) == 2, "checkpointing must recompute the block forward in backward"
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-10, rtol=1e-8, msg=name)
    calls.clear()
    with torch.no_grad():  # no recomputation (and no checkpoint warning) without autograd
        ckpt(x)
    assert len(calls) == 1


def test_lyra_size_stack_parameter_count():
    cfg = BodyConfig()  # width 512, 16 layers "MMMMMMMA", d_state 256, expand 2, headdim 64
    with torch.device("meta"):  # count without allocating ~230 MB
        stack = BlockStack(cfg)
    d, di, n, h = cfg.width, cfg.expand * cfg.width, cfg.d_state, cfg.expand * cfg.width // 64
    conv_dim = di + 2 * n
    mamba = d * (di + conv_dim + h) + conv_dim * (cfg.d_conv + 1) + 3 * h + di + di * d
    bi_block = 2 * mamba + d
    hidden = 4 * d
    attn = 2 * d + d * 3 * d + d * d + d + d * hidden + hidden + hidden * d + d
    expected = 14 * bi_block + 2 * attn + 2 * d
    total = sum(p.numel() for p in stack.parameters())
    print(f"Lyra-size BlockStack parameters: {total:,}")
    assert total == expected
    assert sum(isinstance(b, BiMamba2Block) for b in stack.blocks) == 14


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not mamba_ssm_available(), reason="needs mamba_ssm (pip install mamba-ssm)")
def test_mamba_ssm_kernel_matches_torch_scan():
    x, dt, A, B, C, _ = random_scan_inputs(
        L=300, h=8, p=16, g=2, n=32, dtype=torch.float32, device="cuda"
    )
    y_kernel = ssd_scan(x, dt, A, B, C, 64, backend="mamba_ssm")
    y_torch = ssd_scan(x, dt, A, B, C, 64, backend="torch")
    torch.testing.assert_close(y_kernel, y_torch, atol=2e-3, rtol=2e-3)
