"""The method interface and its registry: one module per method under ``Code/methods/``, one block of settings in
``configs/base.yaml``.

A method is built once per run (:func:`build_method`), owns the extra state it needs beyond the network and the
optimisers — an EMA teacher, memory banks, a running class prior — and turns one labeled batch (and, for
semi-supervised methods, one unlabeled (weak, strong) batch) into

    (total loss: a graph to back-propagate, logs: detached 0-dim tensors, vis: tensors for images/diagnostics)

without synchronising with the host. Its state is saved under the checkpoint key ``method``
(:meth:`Method.state_dict`). A method may train networks of its own besides the run's network
(:meth:`Method.extra_networks`, e.g. ``abd``'s second student): the trainer puts their parameters into its two
optimisers, so one optimiser step, one GradScaler and one lr schedule cover them; evaluation, ``best.pt`` and
export use the run's network only. Adding a method: a subclass decorated with ``@register("name")`` in a module
imported by ``Code/methods/__init__.py``; ``--method`` and ``run_experiments.py --methods`` read :func:`method_names`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Type

import torch
from torch import nn

Tensor = torch.Tensor
StepResult = Tuple[Tensor, Dict[str, Tensor], Optional[Dict[str, Tensor]]]

REGISTRY: Dict[str, Type["Method"]] = {}
# The checkpoint keys under which runs saved before Code/methods/ kept a method's state (the key in method state).
LEGACY_KEYS = ("banks", "teacher", "pool_prior")


def register(name: str) -> Callable[[Type["Method"]], Type["Method"]]:
    """Class decorator: make ``cls`` the method called ``name`` (``config['method']``, ``--method``)."""
    def add(cls: Type["Method"]) -> Type["Method"]:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} is registered twice ({REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return add


def method_names() -> Tuple[str, ...]:
    """The registered method names, in registration order (the valid ``--method`` values)."""
    return tuple(REGISTRY)


class Method:
    """Base class: a method without extra state. Subclasses set ``uses_unlabeled`` and implement :meth:`step`."""

    name = ""
    uses_unlabeled = True  # False: the trainer builds no unlabeled stream and step() gets unlabeled=None
    strong_views = 1  # strong views per unlabeled image: step() gets (weak, strong_1, …, strong_k)
    labeled_strong = False  # True: each labeled sample also carries a strong view, (x, mask, label, x_strong)

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        """Create the extra state. ``student``: the (unwrapped) network, for a teacher that copies it;
        ``labeled_prior``: the labeled list's class shares (C), default uniform."""
        self.config, self.device = config, device

    @classmethod
    def teacher_of(cls, config: Dict[str, Any]) -> Optional[str]:
        """Who labels the weak view under ``config`` (``joint``, ``ema``, ``eval``, ``train``; Code/engine/teacher.py),
        or ``None`` for a method without pseudo-labels."""
        return None

    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        raise NotImplementedError

    def extra_networks(self) -> Tuple[nn.Module, ...]:
        """Networks the method built and trains besides the run's network (none by default). The trainer adds
        their ``param_groups()`` ("seg", "cls") to its two optimisers and puts them in train mode with the model;
        the method saves their weights in :meth:`state_dict`."""
        return ()

    def after_step(self, student: nn.Module, step: int) -> None:
        """Called after the optimiser step (e.g. to move an EMA teacher); nothing by default."""

    def scalars(self) -> Dict[str, float]:
        """Host-side scalars of the method's state for the log (e.g. memory-bank fill), read every ``log.every``."""
        return {}

    def state_dict(self) -> Dict[str, Any]:
        """The method's state for ``latest.pt`` (``checkpoint['method']``)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (or :func:`method_state`'s mapping of an older checkpoint)."""


def method_state(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The method state of a checkpoint: ``checkpoint['method']``, or for a run saved before ``Code/methods/``
    existed its top-level ``banks``, ``teacher`` and ``pool_prior`` entries (``None`` ones left out)."""
    if "method" in checkpoint:
        return checkpoint["method"]
    return {key: checkpoint[key] for key in LEGACY_KEYS if checkpoint.get(key) is not None}


def uses_unlabeled(config: Dict[str, Any]) -> bool:
    """Whether ``config['method']`` trains on unlabeled images (then the trainer builds the unlabeled stream)."""
    return REGISTRY[config["method"]].uses_unlabeled


def method_teacher(config: Dict[str, Any]) -> Optional[str]:
    """Who labels the weak view for ``config['method']`` (:meth:`Method.teacher_of`)."""
    return REGISTRY[config["method"]].teacher_of(config)


def strong_views(config: Dict[str, Any]) -> int:
    """How many strong views of each unlabeled image ``config['method']`` asks the unlabeled stream for."""
    return REGISTRY[config["method"]].strong_views


def labeled_strong_view(config: Dict[str, Any]) -> bool:
    """Whether ``config['method']`` asks the labeled stream for a strong view of each labeled image too."""
    return REGISTRY[config["method"]].labeled_strong


def build_method(config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
                 labeled_prior: Optional[Tensor] = None) -> Method:
    """The registered method ``config['method']``, built for this run (see :meth:`Method.build`)."""
    name = config["method"]
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r} (registered: {', '.join(REGISTRY)})")
    method = REGISTRY[name]()
    method.build(config, device, student, labeled_prior)
    return method
