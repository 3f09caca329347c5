"""MemoryBank: FIFO order, wrap-around, state_dict, padded features, distributed gathering (faked)."""
import pytest
import torch

from Code.errors import UserError
from Code.losses import MemoryBank
from Code.losses import memory_bank as memory_bank_module


pytestmark = pytest.mark.usefixtures("single_thread")


def _values(bank):
    return bank.queue[..., 0].tolist()


def test_fifo_order_and_wrap_around():
    bank = MemoryBank(num_classes=2, size=3, dim=1)
    bank.enqueue(torch.tensor([[1.0], [2.0]]), torch.tensor([0, 0]))
    assert _values(bank) == [[1, 2, 0], [0, 0, 0]]
    assert bank.ptr.tolist() == [2, 0] and bank.filled.tolist() == [2, 0]

    # class 0: 3 → slot 2, 5 → slot 0 (wrap); class 1: 4 → slot 0; label −1 is skipped
    bank.enqueue(torch.tensor([[3.0], [4.0], [5.0], [99.0]]), torch.tensor([0, 1, 0, -1]))
    assert _values(bank) == [[5, 2, 3], [4, 0, 0]]
    assert bank.ptr.tolist() == [1, 1] and bank.filled.tolist() == [3, 1]

    # five items of class 1 at once into size 3: slots 1, 2, 0, 1, 2 → the last three (8, 9, 10) survive
    bank.enqueue(torch.tensor([[6.0], [7.0], [8.0], [9.0], [10.0]]), torch.tensor([1, 1, 1, 1, 1]))
    assert _values(bank) == [[5, 2, 3], [8, 9, 10]]
    assert bank.ptr.tolist() == [1, 0] and bank.filled.tolist() == [3, 3]

    bank.enqueue(torch.tensor([[11.0]]), torch.tensor([0]))
    assert _values(bank) == [[5, 11, 3], [8, 9, 10]]
    assert bank.ptr.tolist() == [2, 0]


def test_features_returns_filled_entries_and_padded_view():
    bank = MemoryBank(num_classes=3, size=4, dim=2)
    feats = torch.arange(10.0).reshape(5, 2)
    bank.enqueue(feats, torch.tensor([2, 0, 2, 2, 0]))
    out, labels = bank.features()
    assert labels.tolist() == [0, 0, 2, 2, 2]
    assert out.tolist() == [feats[1].tolist(), feats[4].tolist(), feats[0].tolist(), feats[2].tolist(),
                            feats[3].tolist()]
    padded, padded_labels = bank.features(padded=True)
    assert padded.shape == (12, 2)
    assert padded_labels.tolist() == [0, 0, -1, -1, -1, -1, -1, -1, 2, 2, 2, -1]


def test_state_dict_round_trip_and_detached():
    bank = MemoryBank(2, 4, 3)
    feats = torch.randn(3, 3, requires_grad=True)
    bank.enqueue(feats, torch.tensor([1, 0, 1]))
    assert not bank.queue.requires_grad
    state = bank.state_dict()
    assert set(state) == {"queue", "ptr", "filled"}
    other = MemoryBank(2, 4, 3)
    other.load_state_dict(state)
    assert torch.equal(other.queue, bank.queue) and other.ptr.tolist() == [1, 2]


def test_bad_arguments():
    with pytest.raises(UserError, match="size"):
        MemoryBank(2, 0, 3)
    with pytest.raises(UserError, match="enqueue"):
        MemoryBank(2, 4, 3).enqueue(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


class _FakeTwoRanks:
    """Stand-in for torch.distributed with this process as rank 0 and a peer rank 1 holding ``peer`` items."""

    def __init__(self, peer_feats, peer_labels):
        self.peer = [torch.tensor([peer_feats.shape[0]]), peer_feats, peer_labels]
        self.calls = 0

    def all_gather(self, outputs, tensor):
        peer = self.peer[self.calls]
        if self.calls > 0:  # feats/labels arrive padded to the common length
            padded = torch.full_like(tensor, -1) if tensor.dim() == 1 else torch.zeros_like(tensor)
            padded[: peer.shape[0]] = peer
            peer = padded
        outputs[0].copy_(tensor)
        outputs[1].copy_(peer)
        self.calls += 1


def test_enqueue_gathers_all_ranks_with_padding(monkeypatch):
    fake = _FakeTwoRanks(torch.tensor([[7.0], [8.0], [9.0]]), torch.tensor([1, 0, 1]))
    monkeypatch.setattr(memory_bank_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(memory_bank_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(memory_bank_module.dist, "all_gather", fake.all_gather)
    bank = MemoryBank(2, 4, 1)
    bank.enqueue(torch.tensor([[1.0]]), torch.tensor([0]))  # rank 0 has 1 item, rank 1 has 3
    assert fake.calls == 3
    assert _values(bank) == [[1, 8, 0, 0], [7, 9, 0, 0]]
    assert bank.filled.tolist() == [2, 2]
