"""InfoNCE with a queue (Code/losses/infonce.py) and the MoCo pieces (Code/pretraining/moco.py), by value."""
import math

import pytest
import torch

from Code.errors import UserError
from Code.losses.infonce import infonce_logits, infonce_loss
from Code.pretraining.moco import KeyQueue, embedding_std, encode_keys, momentum_update


def test_infonce_matches_hand_computation_and_masks_own_image_keys():
    """Mutations checked: no division by the temperature; the own-image mask dropped — each fails here."""
    t = 0.5
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    queue = torch.tensor([[0.28, 0.96], [1.0, 0.0], [0.8, -0.6]])
    # query 0: positive 1/T = 2; negatives 0.28/T = 0.56, 2 (its own image, id 7: masked), 0.8/T = 1.6
    # query 1: positive 0.8/T = 1.6; negatives 0.936/T = 1.872, 0.6/T = 1.2, 0 (no id matches)
    loss_0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.56) + math.exp(1.6))
    loss_1 = -1.6 + math.log(math.exp(1.6) + math.exp(1.872) + math.exp(1.2) + math.exp(0.0))
    loss, accuracy = infonce_loss(q, k, queue, t, torch.tensor([7, 3]), torch.tensor([5, 7, -1]))
    assert loss.item() == pytest.approx((loss_0 + loss_1) / 2, abs=1e-6)
    assert accuracy.item() == pytest.approx(0.5)  # query 0's positive wins, query 1's loses to 1.872
    unmasked = -2.0 + math.log(math.exp(2.0) + math.exp(0.56) + math.exp(2.0) + math.exp(1.6))
    loss_nomask, _ = infonce_loss(q, k, queue, t)
    assert loss_nomask.item() == pytest.approx((unmasked + loss_1) / 2, abs=1e-6)
    loss.backward()
    assert q.grad is not None and k.grad is None  # keys come from the momentum encoder: no gradient
    logits, target = infonce_logits(q.detach(), k, queue, t, torch.tensor([7, 3]), torch.tensor([5, 7, -1]))
    assert logits.shape == (2, 4) and logits[0, 2].item() < -1e8 and target.tolist() == [0, 0]


def test_infonce_with_batch_negatives_matches_hand_computation():
    """The other image's key of the batch is a negative; a batch key of the query's own image (a duplicate in the
    batch) is not. Mutations checked: target 0 instead of i; the duplicate's key left as a negative."""
    t = 0.5
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queue = torch.tensor([[0.28, 0.96]])
    ids, queue_ids = torch.tensor([4, 9, 4]), torch.tensor([9])  # images 0 and 2 are the same image (id 4)
    # query 0: positive k0 = 2; k1 = 0 (other image); k2 masked (own image); queue 0.56 → id 9 ≠ 4, kept
    loss_0 = -2.0 + math.log(math.exp(2.0) + math.exp(0.0) + math.exp(0.56))
    # query 1 (id 9): positive k1 = 1.6; k0 = 1.2, k2 = (0.36 + 0.64)/T = 2; the queue entry has id 9: masked
    loss_1 = -1.6 + math.log(math.exp(1.6) + math.exp(1.2) + math.exp(2.0))
    # query 2 (id 4): positive k2 = 1.6; k0 masked (own image); k1 = 2; queue 0.96/T = 1.92
    loss_2 = -1.6 + math.log(math.exp(1.6) + math.exp(2.0) + math.exp(1.92))
    loss, accuracy = infonce_loss(q, k, queue, t, ids, queue_ids, batch_negatives=True)
    assert loss.item() == pytest.approx((loss_0 + loss_1 + loss_2) / 3, abs=1e-6)
    assert accuracy.item() == pytest.approx(1 / 3)


def test_infonce_rejects_bad_shapes():
    with pytest.raises(UserError, match="N×D"):
        infonce_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(4, 2), 0.2)
    with pytest.raises(UserError, match="temperature"):
        infonce_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(4, 3), 0.0)


def test_momentum_update_and_fifo_queue_by_value():
    """Mutations checked: (1 − m) and m swapped in the update; the queue pointer not advanced (entries
    overwritten at the same place)."""
    query, key = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    query.weight.data.fill_(1.0)
    key.weight.data.fill_(0.0)
    momentum_update(query, key, 0.9)
    assert key.weight.item() == pytest.approx(0.1)
    momentum_update(query, key, 0.9)
    assert key.weight.item() == pytest.approx(0.19)

    bank = KeyQueue(3, 2)
    bank.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([10, 11]))
    bank.push(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]), torch.tensor([12, 13]))  # wraps: index 2, then 0
    assert torch.equal(bank.keys, torch.tensor([[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]))
    assert bank.ids.tolist() == [13, 11, 12] and bank.pointer.item() == 1
    with pytest.raises(UserError, match="queue_size"):
        bank.push(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))


def test_encode_keys_returns_keys_in_input_order():
    """Mutation checked: the keys left in the shuffled order (no inverse permutation)."""
    torch.manual_seed(0)
    x = torch.arange(8.0).reshape(8, 1)
    assert torch.equal(encode_keys(torch.nn.Identity(), x), x)


def test_embedding_std_is_one_when_spread_and_zero_when_collapsed():
    """Mutation checked: the std taken over dimensions instead of over the batch."""
    spread = torch.eye(4)  # four orthogonal unit vectors: per-dimension std 0.5, √4 · 0.5 = 1
    assert embedding_std(spread).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[0.6, 0.8]]).repeat(5, 1)
    assert embedding_std(collapsed).item() == pytest.approx(0.0)
