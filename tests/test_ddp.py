"""DDP without GPUs (issue 12, part 4): per-rank training samplers are disjoint and cover the data, and the
evaluation gathered over 2 gloo ranks (``Trainer.evaluate``) equals the single-process evaluation of the same
checkpoint, including a test part whose size is not a multiple of the world size (the sampler pads a rank)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from Code.engine.data import InfiniteBatchSampler
from Code.engine.distributed import DistInfo
from Code.inference.metrics import METRIC_KEYS
from helpers import smoke_config

WORLD = 2


def _epoch(sampler: InfiniteBatchSampler, epoch: int) -> list:
    """The indices one rank draws in ``epoch`` (its batches_per_epoch batches)."""
    it = iter(sampler)
    batches = [next(it) for _ in range((epoch + 1) * sampler.batches_per_epoch)][epoch * sampler.batches_per_epoch:]
    assert all(e == epoch for batch in batches for e, _ in batch)
    return [i for batch in batches for _, i in batch]


@pytest.mark.parametrize("n, batch", [(12, 3), (11, 2), (7, 4)])
def test_rank_samplers_are_disjoint_and_cover_each_epoch(n, batch):
    """Within every epoch the two ranks draw different images, and together every image (padding the shorter
    shard with repeats only); epochs are reshuffled.

    Mutations checked: the permutation seeded with the rank (``hash((seed, stream, epoch, rank))``) → ranks
    overlap; ``perm[rank::world]`` replaced by ``perm[:shard]`` → both ranks draw the same images."""
    for epoch in range(3):
        shards = [_epoch(InfiniteBatchSampler(n, batch, seed=5, stream=1, dist=DistInfo(r, WORLD)), epoch)
                  for r in range(WORLD)]
        padded = -(-n // WORLD) * WORLD
        every = shards[0] + shards[1]
        assert set(every) == set(range(n)), (epoch, shards)
        if n % WORLD == 0 and len(shards[0]) * WORLD == n:
            assert not set(shards[0]) & set(shards[1]), (epoch, shards)
        else:  # a padded or repeated shard: a repeat is an image the other rank also has, never more than needed
            assert len(every) - len(set(every)) == len(every) - n and len(every) >= padded
            assert len(set(shards[0]) & set(shards[1])) <= len(every) - n
    first, second = (_epoch(InfiniteBatchSampler(n, batch, 5, 1, DistInfo(0, WORLD)), e) for e in (0, 1))
    assert first != second  # reshuffled per epoch


def test_resumed_sampler_continues_where_it_stopped():
    """``start=k`` yields exactly what the sampler yields after its first k batches, on every rank.

    Mutation checked: ``batch_no = self.start`` replaced by ``batch_no = 0`` in ``InfiniteBatchSampler.__iter__``."""
    for rank in range(WORLD):
        whole = iter(InfiniteBatchSampler(9, 2, 3, 0, DistInfo(rank, WORLD)))
        expected = [next(whole) for _ in range(7)][4:]
        resumed = iter(InfiniteBatchSampler(9, 2, 3, 0, DistInfo(rank, WORLD), start=4))
        assert [next(resumed) for _ in range(3)] == expected


def _odd_split(phantom_split: Path, tmp: Path) -> Path:
    """The tiny split with a test part of 13 images (odd: DistributedSampler pads rank 1 with a repeat)."""
    split = tmp / "split"
    shutil.copytree(phantom_split, split)
    lines = (split / "test" / "labeled.txt").read_text().splitlines()
    assert len(lines) % WORLD == 0
    (split / "test" / "labeled.txt").write_text("\n".join(lines[:-1]) + "\n")
    return split


def _worker(rank: int, split: str, checkpoint: str, out: str, rendezvous: str) -> None:
    """One gloo rank: a Trainer with DistInfo(rank, 2) (DDP-wrapped model), the checkpoint's weights, ``evaluate()``."""
    import torch.distributed as dist

    from Code.common.checkpoint import load_checkpoint
    from Code.engine.distributed import DistInfo, unwrap
    from Code.engine.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        config = smoke_config(split, method="supervised")
        trainer = Trainer(config, Path(out) / f"rank{rank}", torch.device("cpu"), DistInfo(rank, WORLD, rank))
        unwrap(trainer.model).load_state_dict(load_checkpoint(checkpoint)["model"])
        metrics = trainer.evaluate()
        local = len(list(trainer.eval_loader.sampler))
        torch.save({"metrics": metrics, "local_images": local}, Path(out) / f"result{rank}.pt")
        trainer.logger.close()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_evaluation_equals_single_process(phantom_split, tmp_path):
    """``Trainer.evaluate`` on 2 gloo ranks (each evaluating its shard, records gathered, the sampler's padding
    dropped) gives the single-process metrics of the same checkpoint; one rank's shard alone would not.

    Mutations checked: no gathering in ``Trainer.evaluate`` (each rank summarises its own records); the padding
    kept (records concatenated instead of de-duplicated by name)."""
    from Code.common.checkpoint import save_checkpoint
    from Code.inference.metrics import summarize_metrics
    from Code.inference.prediction import evaluate_model
    from Code.engine.trainer import Trainer

    split = _odd_split(phantom_split, tmp_path)
    config = smoke_config(split, method="supervised")
    torch.manual_seed(1)
    single = Trainer(config, tmp_path / "single", torch.device("cpu"))
    checkpoint = tmp_path / "single" / "checkpoints" / "latest.pt"
    save_checkpoint(checkpoint, single.state_dict())
    expected = single.evaluate()
    records = evaluate_model(single.model, single.eval_loader, "cpu")
    single.logger.close()
    assert len(records) == 13
    shard0 = summarize_metrics(records[0::WORLD])  # what rank 0 alone would report (same sharding rule)
    differs = [k for k in METRIC_KEYS if shard0[k] != pytest.approx(expected[k], abs=1e-6, nan_ok=True)]
    assert "auc" in differs, (shard0, expected)

    mp.spawn(_worker, args=(str(split), str(checkpoint), str(tmp_path), str(tmp_path / "rendezvous")), nprocs=WORLD,
             join=True)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"result{rank}.pt", weights_only=False)
        assert result["local_images"] == 7  # 13 images over 2 ranks: 7 + 7 with one padded repeat
        for key in METRIC_KEYS:
            assert result["metrics"][key] == pytest.approx(expected[key], abs=1e-6, nan_ok=True), (rank, key)
