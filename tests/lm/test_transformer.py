"""The batched decoder-only transformer: parameter count, equality with torch's own pre-norm layer, causal
masking, independence of instances, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError, DataError
from transferlab.nets import BlockNet, stack_instances
from transferlab.nets.transformer import (
    TRANSFORMER_SIZES,
    TransformerSize,
    non_embedding_params,
    training_flops_per_token,
    transformer,
)



def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _counted_non_embedding(net: BlockNet) -> int:
    """Parameters outside the token/position embedding (block 1) and the unembedding, per instance."""
    total = sum(p.numel() for block in net.blocks[1:] for p in block.parameters())
    total += sum(p.numel() for p in net.head.norm.parameters())
    return total // net.instances


@pytest.mark.parametrize("name", list(TRANSFORMER_SIZES))
def test_non_embedding_count_matches_the_modules_and_torch(name: str) -> None:
    size = TRANSFORMER_SIZES[name]
    net = transformer(name, context=16, instances=2, generator=_gen())
    assert _counted_non_embedding(net) == non_embedding_params(name) == size.non_embedding_params
    # independent count: torch's pre-norm encoder layer has the same parameters per layer, plus LN_f (2d)
    d = size.d_model
    layer = nn.TransformerEncoderLayer(d, size.n_heads, 4 * d, dropout=0.0, activation="gelu", norm_first=True)
    assert non_embedding_params(name) == size.n_layers * sum(p.numel() for p in layer.parameters()) + 2 * d
    # the embeddings and unembedding make up the rest: V d + T d + d V + V per instance
    everything = sum(p.numel() for p in net.parameters()) // 2
    assert everything - non_embedding_params(name) == 256 * d + 16 * d + d * 256 + 256


def test_the_family_spans_at_least_one_and_a_half_decades() -> None:
    counts = [non_embedding_params(name) for name in TRANSFORMER_SIZES]
    assert len(counts) >= 5 and counts == sorted(counts)
    assert math.log10(counts[-1] / counts[0]) >= 1.5
    # Kaplan's approximation 12 L d^2 is within 10 % of the exact count for every size
    for size in TRANSFORMER_SIZES.values():
        approx = 12 * size.n_layers * size.d_model**2
        assert abs(approx - size.non_embedding_params) <= 0.1 * size.non_embedding_params
    assert training_flops_per_token("xl", 128) == 6 * counts[-1] + 6 * 4 * 128 * 128


def _torch_reference(net: BlockNet, i: int) -> nn.Module:
    """Instance i of ``net`` rebuilt from torch's own modules (pre-norm TransformerEncoderLayer)."""
    size: TransformerSize = net.size
    d, H = size.d_model, size.n_heads
    emb = net.blocks[0]
    layers = []
    for block in net.blocks[1:]:
        ref = nn.TransformerEncoderLayer(d, H, 4 * d, dropout=0.0, activation="gelu", norm_first=True,
                                         batch_first=True)
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(block.qkv.weight[i].T)
            ref.self_attn.in_proj_bias.copy_(block.qkv.bias[i, 0])
            ref.self_attn.out_proj.weight.copy_(block.proj.weight[i].T)
            ref.self_attn.out_proj.bias.copy_(block.proj.bias[i, 0])
            ref.linear1.weight.copy_(block.fc1.weight[i].T)
            ref.linear1.bias.copy_(block.fc1.bias[i, 0])
            ref.linear2.weight.copy_(block.fc2.weight[i].T)
            ref.linear2.bias.copy_(block.fc2.bias[i, 0])
            for mine, theirs in ((block.norm1, ref.norm1), (block.norm2, ref.norm2)):
                theirs.weight.copy_(mine.weight[i])
                theirs.bias.copy_(mine.bias[i])
        layers.append(ref)
    final = nn.LayerNorm(d)
    unembed = nn.Linear(d, emb.vocab)
    with torch.no_grad():
        final.weight.copy_(net.head.norm.weight[i])
        final.bias.copy_(net.head.norm.bias[i])
        unembed.weight.copy_(net.head.unembed.weight[i].T)
        unembed.bias.copy_(net.head.unembed.bias[i, 0])
    token, position = emb.token[i].detach(), emb.position[i].detach()

    class Reference(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            T = ids.shape[-1]
            h = token[ids] + position[:T]
            mask = nn.Transformer.generate_square_subsequent_mask(T)
            for layer in layers:
                h = layer(h, src_mask=mask, is_causal=True)
            return unembed(final(h))

    return Reference()


def test_each_instance_equals_torchs_pre_norm_transformer() -> None:
    size = TransformerSize(d_model=32, n_layers=2, n_heads=4)
    net = transformer(size, context=24, instances=3, generator=_gen(1)).eval()
    ids = torch.randint(0, 256, (5, 20), generator=_gen(2))
    with torch.no_grad():
        mine = net.forward_from(ids.expand(3, 5, 20), 0)
        for i in range(3):
            theirs = _torch_reference(net, i).eval()(ids)
            # float32 with different summation orders: logits of size ~3 agree to ~1e-5
            torch.testing.assert_close(mine[i], theirs, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(mine[0], mine[1])  # instances are drawn independently


def test_changing_a_future_token_leaves_earlier_logits_unchanged() -> None:
    net = transformer("s", context=32, instances=2, generator=_gen(3)).eval()
    ids = torch.randint(0, 256, (4, 32), generator=_gen(4))
    changed = ids.clone()
    j = 17
    changed[:, j] = (changed[:, j] + 1) % 256
    with torch.no_grad():
        before, after = net(ids), net(changed)
    # positions < j see the same tokens: equal up to float32 rounding (1e-5 on logits of order 1)
    torch.testing.assert_close(before[:, :, :j], after[:, :, :j], rtol=0, atol=1e-5)
    assert (before[:, :, j:] - after[:, :, j:]).abs().amax() > 1e-2  # and position j onwards does change


def test_same_generator_same_weights_and_reinit_after() -> None:
    a = transformer("xs", context=8, instances=2, generator=_gen(5))
    b = transformer("xs", context=8, instances=2, generator=_gen(5))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    embedding = a.blocks[0].token.detach().clone()
    layer = a.blocks[1].qkv.weight.detach().clone()
    a.reinit_after(1, _gen(6))
    assert torch.equal(a.blocks[0].token, embedding) and not torch.equal(a.blocks[1].qkv.weight, layer)
    assert a.block_names == ("embed", "layer1")


def test_stacked_transformers_compute_what_each_computed() -> None:
    # e.g. one pretrained model copied into several instances, one per fine-tuning set
    a = transformer("xs", context=16, generator=_gen(7))
    b = transformer("xs", context=16, instances=2, generator=_gen(8))
    stacked = stack_instances([a, b])
    ids = torch.randint(0, 256, (3, 16), generator=_gen(9))
    with torch.no_grad():
        torch.testing.assert_close(stacked(ids), torch.cat([a(ids), b(ids)]), rtol=0, atol=1e-6)
    assert stacked.instances == 3 and stacked.context == 16 and stacked.size == a.size


def test_bad_inputs_raise_one_clear_error() -> None:
    net = transformer("xs", context=8, generator=_gen())
    with pytest.raises(DataError, match="exceed the model's context of 8"):
        net.forward_from(torch.zeros(1, 2, 9, dtype=torch.int64), 0)
    with pytest.raises(DataError, match=r"0\.\.255"):
        net(torch.full((2, 8), 256))
    with pytest.raises(DataError, match="integer tensor"):
        net(torch.zeros(2, 8))
    with pytest.raises(ConfigError, match="transformer size must be one of"):
        transformer("huge", generator=_gen())
    with pytest.raises(ConfigError, match="not divisible"):
        TransformerSize(d_model=30, n_layers=1, n_heads=4)
