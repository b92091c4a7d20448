"""Stage 1 model: batched == one bag at a time, order and padding invariance, Eq. 3 with k clamping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from haf.mil.clam import GatedAttentionMIL, clam_loss, instance_k, instance_loss

torch.set_num_threads(1)

DIM = 24
SIZES = [3, 17, 1, 40, 9]


def _bags(seed: int = 0, sizes=SIZES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, DIM, generator=g) for n in sizes]


def _pad(bags: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(b) for b in bags)
    x = torch.full((len(bags), width, DIM), fill)
    mask = torch.zeros(len(bags), width, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = b
        mask[i, : len(b)] = True
    return x, mask


def _model(seed: int = 0, dropout: float = 0.25) -> GatedAttentionMIL:
    torch.manual_seed(seed)
    return GatedAttentionMIL(DIM, d1=16, d2=8, dropout=dropout).eval()


def test_batched_forward_and_loss_equal_one_bag_at_a_time():
    model, bags = _model(), _bags()
    label = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    x, mask = _pad(bags)
    out = model(x, mask)
    batched = clam_loss(model, out, mask, label, bag_weight=0.7, k_sample=4)
    per_bag_total, per_bag_inst = [], []
    for i, bag in enumerate(bags):
        single = model(bag)  # (N, D): one bag, no mask
        assert torch.allclose(single.logit, out.logit[i : i + 1], atol=1e-6)
        assert torch.allclose(single.z, out.z[i : i + 1], atol=1e-6)
        assert torch.allclose(single.attention[0], out.attention[i, : len(bag)], atol=1e-6)
        assert torch.all(out.attention[i, len(bag) :] == 0)
        m = torch.ones(1, len(bag), dtype=torch.bool)
        loss = clam_loss(model, single, m, label[i : i + 1], bag_weight=0.7, k_sample=4)
        per_bag_total.append(loss.total)
        per_bag_inst.append(instance_loss(model, single, m, label[i : i + 1], 4))
    assert torch.allclose(batched.total, torch.stack(per_bag_total).mean(), atol=1e-6)
    inst = instance_loss(model, out, mask, label, 4)
    assert torch.allclose(inst, torch.cat(per_bag_inst), atol=1e-6)
    assert inst[SIZES.index(1)] == 0  # a bag of one instance has k = 0
    # bag 0 (3 instances, k = 1) by hand: BCE of its most attended instance against 1 and of its least
    # attended against 0, with the instance classifier of its label (1)
    h, a = out.h[0, :3], out.scores[0, :3]
    logit = (h @ model.instance_classifiers.weight[1] + model.instance_classifiers.bias[1]).detach()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    by_hand = 0.5 * (bce(logit[a.argmax()], torch.tensor(1.0)) + bce(logit[a.argmin()], torch.tensor(0.0)))
    assert inst[0].item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_batched_gradients_equal_mean_of_per_bag_gradients():
    model, bags = _model(dropout=0.0), _bags(1)
    label = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    x, mask = _pad(bags)
    clam_loss(model, model(x, mask), mask, label, k_sample=3).total.backward()
    batched = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i, bag in enumerate(bags):
        m = torch.ones(1, len(bag), dtype=torch.bool)
        (clam_loss(model, model(bag), m, label[i : i + 1], k_sample=3).total / len(bags)).backward()
    for a, b in zip(batched, [p.grad for p in model.parameters()], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_embedding_is_invariant_to_instance_order():
    model, (bag,) = _model(), _bags(2, [50])
    out = model(bag)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    shuffled = model(bag[perm])
    assert torch.allclose(out.z, shuffled.z, atol=1e-6)
    assert torch.allclose(out.logit, shuffled.logit, atol=1e-6)
    assert torch.allclose(out.attention[0, perm], shuffled.attention[0], atol=1e-7)


@pytest.mark.parametrize("fill", [0.0, 1e6, float("nan"), float("inf")])
def test_padding_values_cannot_change_output_or_gradients(fill):
    model, bags = _model(dropout=0.0), _bags(4)
    label = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    ref_x, mask = _pad(bags, 0.0)
    ref = model(ref_x, mask)
    clam_loss(model, ref, mask, label).total.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    x, _ = _pad(bags, fill)
    out = model(x, mask)
    clam_loss(model, out, mask, label).total.backward()
    assert torch.equal(out.z, ref.z) and torch.equal(out.logit, ref.logit)
    for a, b in zip(ref_grads, [p.grad for p in model.parameters()], strict=True):
        assert torch.isfinite(b).all() and torch.equal(a, b)


def test_k_is_clamped_and_a_bag_of_three_trains():
    assert instance_k(torch.tensor([0, 1, 2, 3, 16, 17, 100]), 8).tolist() == [0, 0, 1, 1, 8, 8, 8]
    torch.manual_seed(0)
    model = GatedAttentionMIL(DIM, d1=16, d2=8, dropout=0.25).train()
    bag = torch.randn(1, 3, DIM)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = model(bag, mask)
    loss = clam_loss(model, out, mask, torch.tensor([1.0]), k_sample=8)
    # k = 1: the mean of BCE(top instance, 1) and BCE(bottom instance, 0), true class 1's classifier
    logit = out.h[0] @ model.instance_classifiers.weight[1] + model.instance_classifiers.bias[1]
    top, bottom = out.scores[0].argmax(), out.scores[0].argmin()
    by_hand = 0.5 * (F.softplus(-logit[top]) + F.softplus(logit[bottom]))
    assert loss.instance.item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert loss.total.item() == pytest.approx(0.7 * loss.bag.item() + 0.3 * by_hand.item(), abs=1e-6)
    loss.total.backward()
    assert model.instance_classifiers.weight.grad[1].abs().sum() > 0  # the true class's classifier learns
    assert model.instance_classifiers.weight.grad[0].abs().sum() == 0  # the other one is not touched


def test_empty_bag_gives_zero_embedding_and_is_left_out_of_the_loss():
    model = _model()
    x, mask = _pad(_bags(5, [4, 6]))
    x = torch.cat([x, torch.zeros(1, x.shape[1], DIM)])
    mask = torch.cat([mask, torch.zeros(1, mask.shape[1], dtype=torch.bool)])
    out = model(x, mask)
    assert torch.all(out.z[2] == 0) and torch.all(out.attention[2] == 0)
    label = torch.tensor([1.0, 0.0, 1.0])
    with_empty = clam_loss(model, out, mask, label).total
    without = clam_loss(model, model(x[:2], mask[:2]), mask[:2], label[:2]).total
    assert torch.allclose(with_empty, without, atol=1e-6)
    # an unlabelled bag (NaN) is also left out
    nan_label = clam_loss(model, out, mask, torch.tensor([1.0, 0.0, float("nan")])).total
    assert torch.allclose(nan_label, without, atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    torch.save(model.checkpoint(fold=3), tmp_path / "model.pt")
    back = GatedAttentionMIL.from_checkpoint(str(tmp_path / "model.pt")).eval()
    bag = _bags(6, [7])[0]
    assert torch.equal(back(bag).z, model(bag).z)


def test_packed_input_equals_padded_input():
    model, bags = _model(), _bags(7)
    x, mask = _pad(bags, float("nan"))
    padded = model(x, mask)
    packed = model(torch.cat(bags), mask)  # only the real instances, row-major in mask
    assert torch.equal(padded.z, packed.z) and torch.equal(padded.logit, packed.logit)
    with pytest.raises(RuntimeError):
        model(torch.cat(bags)[:-1], mask)  # a row short: an error, not a silent misalignment


def test_bf16_autocast_forward_then_fp32_loss():
    # the CUDA path: forward under bf16 autocast, Eq. 3 outside it (simulated with CPU autocast)
    model, bags = _model(dropout=0.0), _bags(8)
    x, mask = _pad(bags)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, mask)
    loss = clam_loss(model, out, mask, torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]))
    loss.total.backward()
    assert out.z.dtype == torch.float32 and torch.isfinite(loss.total)
    ref = model(x, mask)
    # bf16 rounding only: measured max |diff| 0.009 on z (|z| <= 3.8) and 0.006 on the logit
    assert torch.allclose(out.z, ref.z, rtol=0, atol=0.03)
    assert torch.allclose(out.logit, ref.logit, rtol=0, atol=0.02)
    assert not torch.equal(out.z, ref.z)  # the forward did run in bf16


def _stacked(seeds, dropout=0.25):
    from haf.runtime.stacked import Layers, Members

    members = Members(seeds)
    return members, GatedAttentionMIL(DIM, d1=16, d2=8, dropout=dropout, layers=Layers(members))


def _stack_inputs(member_bags: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed x (member after member) and the (K, B, N) mask of per-member bag lists."""
    depth = max(len(b) for b in member_bags)
    width = max(len(x) for b in member_bags for x in b)
    mask = torch.zeros(len(member_bags), depth, width, dtype=torch.bool)
    for k, bags in enumerate(member_bags):
        for i, bag in enumerate(bags):
            mask[k, i, : len(bag)] = True
    return torch.cat([x for b in member_bags for x in b]), mask


def test_a_stacked_member_is_the_plain_model_on_its_own_bags():
    from haf.runtime.stacked import member_state_dict

    _, model = _stacked([5, 6, 7])
    model.eval()
    member_bags = [_bags(10 + k, sizes) for k, sizes in enumerate([[3, 17], [40, 1, 9, 2], [6]])]
    x, mask = _stack_inputs(member_bags)
    out = model(x, mask)
    labels = torch.tensor([[1.0, 0.0, 0, 0], [0.0, 1.0, 1.0, 0.0], [1.0, 0, 0, 0]])
    loss = clam_loss(model, out, mask, labels, k_sample=4)
    assert out.z.shape == (3, 4, 16) and loss.total.shape == (3,)
    for k, bags in enumerate(member_bags):
        plain = GatedAttentionMIL(DIM, d1=16, d2=8, dropout=0.25).eval()
        plain.load_state_dict(member_state_dict(model, k))  # strict: the same module tree
        px, pmask = _pad(bags)
        ref = plain(px, pmask)
        n = len(bags)
        # measured: max |difference| 1.2e-7 (the stacked kernels round differently)
        assert torch.allclose(out.z[k, :n], ref.z, atol=1e-6) and torch.allclose(
            out.logit[k, :n], ref.logit, atol=1e-6
        )
        assert torch.all(out.attention[k, n:] == 0) and torch.all(out.z[k, n:] == 0)
        ref_loss = clam_loss(plain, ref, pmask, labels[k, :n], k_sample=4)
        assert loss.total[k].item() == pytest.approx(ref_loss.total.item(), abs=1e-6)
        assert loss.instance[k].item() == pytest.approx(ref_loss.instance.item(), abs=1e-6)
    # padded (K, B, N, D) input is the same bags
    padded = torch.full((*mask.shape, DIM), float("nan"))
    padded[mask] = x
    assert torch.equal(model(padded, mask).z, out.z)
    # members start from their own Xavier-normal draws: different weights, zero biases
    w = model.fc[0].weight.detach()
    assert not torch.allclose(w[0], w[1]) and torch.count_nonzero(model.fc[0].bias) == 0


def test_a_stacked_members_dropout_is_its_own():
    # member 1's dropout masks come from its own generator and its own instance rows only: what the
    # other members hold (bags, sizes, whether they have a batch at all) cannot change its output
    mine = _bags(20, [7, 30, 4])
    outs = []
    for others in ([_bags(21, [50, 2]), _bags(22, [3])], [_bags(23, [1]), []]):
        members, model = _stacked([1, 2, 3])
        model.train()
        member_bags = [others[0], mine, others[1]]
        members.set_active([len(b) > 0 for b in member_bags])
        x, mask = _stack_inputs([b if b else [torch.zeros(0, DIM)] for b in member_bags])
        outs.append(model(x, mask))
    # h (w_l on member 1's own rows, its own masks) is bit-identical; z rounds differently over the
    # wider padding (measured 6e-8)
    assert torch.equal(outs[0].h[1, :3, :30], outs[1].h[1, :3, :30])
    assert torch.allclose(outs[0].z[1, :3], outs[1].z[1, :3], rtol=0, atol=1e-6)
    # dropout did act (eval differs), and the masks differ between members with different seeds
    members, model = _stacked([1, 2, 3])
    model.eval()
    x, mask = _stack_inputs([_bags(21, [50, 2]), mine, _bags(22, [3])])
    assert not torch.equal(model(x, mask).z[1, :3], outs[0].z[1, :3])


def test_embed_one_is_the_forward_of_a_batch_of_one_bag():
    model = _model()
    for bag in _bags(30, [1, 5, 64]):
        z, logit = model.embed_one(bag)
        out = model(bag)
        assert torch.equal(z, out.z[0]) and torch.equal(logit, out.logit[0])
        z2, logit2, attention = model.attend_one(bag)  # the attention that pooled that z
        assert torch.equal(z2, z) and torch.equal(logit2, logit)
        assert torch.equal(attention, out.attention[0]) and attention.shape == (len(bag),)
    with pytest.raises(ValueError, match="eval mode"):
        model.train().embed_one(bag)
