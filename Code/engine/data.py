"""Data for the engine: resolving the split folder, resumable infinite batch streams, the evaluation loader.

Exact resume without saving worker RNG states: every augmentation draw of sample ``i`` in epoch ``e`` comes from
``default_rng([seed, e, i])`` inside :class:`~Code.data.SplitDataset`, and the order of epoch ``e`` is a permutation
seeded by ``(seed, stream, e)``. A stream is then fully described by the number of batches it has handed out.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from Code.data import SplitDataset
from Code.engine.distributed import DistInfo
from Code.engine.worker_signals import GroupSafeDataLoader, isolate_worker
from Code.errors import UserError
from Code.methods import labeled_strong_view, strong_views, uses_unlabeled


def resolve_split(config: Dict[str, Any]) -> Tuple[Path, int]:
    """``(split folder, label budget N)``; the built-in phantom is generated and split on first use."""
    data = config["data"]
    if data["split"] is None:
        from Code.DataProcess.default_data import DEFAULT_LABELS, ensure_phantom_split

        split = Path(ensure_phantom_split())
        labels = data["labels"] if data["labels"] is not None else DEFAULT_LABELS
    else:
        split = Path(data["split"])
        if not split.is_dir():
            raise UserError(f"data split folder not found: {split} (make one with Code/DataProcess/data_split.py)")
        budgets = sorted(int(p.name) for p in (split / "train").glob("*") if p.name.isdigit())
        if not budgets:
            raise UserError(f"{split} is not a split folder: no train/<N>/ inside (make one with data_split.py)")
        labels = data["labels"]
        if labels is None:
            if len(budgets) > 1:
                raise UserError(f"{split} holds several label budgets {budgets}: choose one with --labels")
            labels = budgets[0]
    part = split / "train" / str(labels)
    if not part.is_dir():
        raise UserError(f"label budget {labels} not found in {split / 'train'} (has: "
                        f"{', '.join(sorted(p.name for p in (split / 'train').glob('*'))) or 'nothing'})")
    for needed in (part / "labeled" / "labeled.txt", split / "test" / "labeled.txt"):
        if not needed.is_file():
            raise UserError(f"malformed split {split}: missing {needed}")
    return split, int(labels)


class _EpochTagged(Dataset):
    """Wraps a :class:`SplitDataset` so that the sampler can pass ``(epoch, index)`` pairs."""

    def __init__(self, dataset: SplitDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]):
        epoch, index = item
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class InfiniteBatchSampler(Sampler):
    """Endless batches of ``(epoch, index)``; epoch ``e`` is a seeded permutation, sharded over DDP ranks.

    ``start`` skips that many batches (resume). An epoch holds ``max(1, shard // batch_size)`` batches; a shard
    smaller than a batch is repeated to fill one.
    """

    def __init__(self, n: int, batch_size: int, seed: int, stream: int, dist: DistInfo = DistInfo(), start: int = 0):
        self.n, self.batch_size, self.seed, self.stream, self.dist, self.start = n, batch_size, seed, stream, dist, start
        shard = -(-n // dist.world_size)
        self.batches_per_epoch = max(1, shard // batch_size)

    def _epoch_indices(self, epoch: int) -> List[int]:
        gen = torch.Generator().manual_seed(hash((self.seed, self.stream, epoch)) % (2 ** 63))
        perm = torch.randperm(self.n, generator=gen)
        total = -(-self.n // self.dist.world_size) * self.dist.world_size
        perm = torch.cat([perm, perm[: total - self.n]]) if total > self.n else perm
        shard = perm[self.dist.rank::self.dist.world_size]
        need = self.batches_per_epoch * self.batch_size
        if len(shard) < need:
            shard = shard.repeat(-(-need // len(shard)))
        return shard[:need].tolist()

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        batch_no = self.start
        cached_epoch, indices = -1, []
        while True:
            epoch, offset = divmod(batch_no, self.batches_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, indices = epoch, self._epoch_indices(epoch)
            chunk = indices[offset * self.batch_size:(offset + 1) * self.batch_size]
            yield [(epoch, i) for i in chunk]
            batch_no += 1

    def __len__(self) -> int:  # one epoch, for progress displays only
        return self.batches_per_epoch


class BatchStream:
    """An endless, resumable stream of training batches; ``consumed`` is its whole state."""

    def __init__(self, dataset: SplitDataset, batch_size: int, seed: int, stream: int, num_workers: int,
                 dist: DistInfo = DistInfo(), pin_memory: bool = False):
        self.dataset, self.batch_size, self.seed, self.stream = dataset, batch_size, seed, stream
        self.num_workers, self.dist, self.pin_memory = num_workers, dist, pin_memory
        self.consumed = 0
        self._iterator: Optional[Iterator] = None

    def _start(self) -> Iterator:
        sampler = InfiniteBatchSampler(len(self.dataset), self.batch_size, self.seed, self.stream, self.dist,
                                       start=self.consumed)
        loader = GroupSafeDataLoader(_EpochTagged(self.dataset), batch_sampler=sampler, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, persistent_workers=False, generator=torch.Generator(),
                            prefetch_factor=2 if self.num_workers > 0 else None, worker_init_fn=isolate_worker)
        return iter(loader)

    def __next__(self):
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self.consumed += 1
        return batch

    def __iter__(self):
        return self

    def close(self) -> None:
        """Shut the loader's workers down now (the stream restarts at ``consumed`` if used again). Not left to
        garbage collection: a stream still open at interpreter exit meets multiprocessing's exit handler."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()

    def state_dict(self) -> Dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.close()
        self.consumed = int(state["consumed"])


def build_streams(config: Dict[str, Any], split: Path, labels: int, dist: DistInfo,
                  pin_memory: bool = False) -> Tuple[BatchStream, Optional[BatchStream]]:
    """The labeled stream (with a strong view of each image when the method asks, ``Method.labeled_strong``) and,
    when the method uses unlabeled images (``Method.uses_unlabeled``), the unlabeled stream (with the method's
    number of strong views, ``Method.strong_views``)."""
    data, train, seed = config["data"], config["train"], config["seed"]
    common = dict(size=data["size"], in_channels=data["in_channels"], aug=data["aug"], seed=seed)
    labeled = SplitDataset(split / "train" / str(labels) / "labeled", "labeled",
                           labeled_strong=labeled_strong_view(config), **common)
    if len(labeled) == 0:
        raise UserError(f"the labeled list of {split / 'train' / str(labels)} is empty")
    labeled_stream = BatchStream(labeled, train["batch_labeled"], seed, 0, data["num_workers"], dist, pin_memory)
    if not uses_unlabeled(config):
        return labeled_stream, None
    unlabeled_dir = split / "train" / str(labels) / "unlabeled"
    if not (unlabeled_dir / "unlabeled.txt").is_file():
        raise UserError(f"malformed split {split}: missing {unlabeled_dir / 'unlabeled.txt'} "
                        f"(method '{config['method']}' needs unlabeled images)")
    unlabeled = SplitDataset(unlabeled_dir, "unlabeled", truth=config["log"]["pseudo_diagnostics"],
                             strong_views=strong_views(config), **common)
    if unlabeled.truth_note and dist.is_main:
        print(f"note: pseudo-label diagnostics off: {unlabeled.truth_note}", file=sys.stderr)
    if len(unlabeled) == 0:
        raise UserError(f"{unlabeled_dir / 'unlabeled.txt'} is empty (method '{config['method']}' needs unlabeled images)")
    unlabeled_stream = BatchStream(unlabeled, train["batch_unlabeled"], seed, 1, data["num_workers"], dist, pin_memory)
    return labeled_stream, unlabeled_stream


def has_val(split: Path) -> bool:
    """Whether the split has a validation part (``val/labeled.txt``, data_split.py --val-ratio > 0)."""
    return (Path(split) / "val" / "labeled.txt").is_file()


def build_eval_loader(config: Dict[str, Any], split: Path, dist: DistInfo, part: str = "test") -> DataLoader:
    """A labeled part (``test`` or ``val``) in eval mode, sharded over ranks (the trainer gathers the records)."""
    data = config["data"]
    dataset = SplitDataset(split / part, "eval", size=data["size"], in_channels=data["in_channels"], seed=config["seed"])
    if len(dataset) == 0:
        raise UserError(f"the {part} list {split / part / 'labeled.txt'} is empty")
    sampler = DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=False) if dist.enabled else None
    return GroupSafeDataLoader(dataset, batch_size=config["eval"]["batch_size"], shuffle=False, sampler=sampler,
                      num_workers=min(data["num_workers"], 2), generator=torch.Generator(),
                      worker_init_fn=isolate_worker)
