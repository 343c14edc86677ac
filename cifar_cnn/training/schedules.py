"""Learning-rate schedules (conf/scheduler/), stepped once per optimiser step.

`build_scheduler` turns a `scheduler` config into a torch scheduler for an optimiser, sized by
the run's total optimiser steps and epochs: `none` (the study's constant rate) gives none;
`cosine` and `step` start with an optional linear warm-up of `warmup_epochs`; `onecycle` is
torch's OneCycleLR (its own warm-up is `pct_start`). The schedule spans the whole run, so a
run with a schedule cannot be continued to more epochs (checkpoint.config_mismatches).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

SCHEDULERS = ("none", "cosine", "onecycle", "step")


@dataclass(frozen=True)
class _Factor:
    """The factor LambdaLR multiplies the optimiser's learning rate by at step `s` (0-based):
    a linear warm-up over `warmup` steps, then a cosine from 1 down to `floor` at the last
    step (`cosine`), or `gamma` to the power of the `period`s begun (`step`)."""

    kind: str
    warmup: int
    total: int
    floor: float = 0.0
    period: int = 1
    gamma: float = 1.0

    def __call__(self, s: int) -> float:
        warm = (s + 1) / self.warmup if s < self.warmup else 1.0
        if self.kind == "step":
            return warm * self.gamma ** (s // self.period)
        if s < self.warmup:
            return warm
        progress = min(1.0, (s - self.warmup) / max(1, self.total - 1 - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: Mapping | None, total_steps: int, epochs: int
) -> LRScheduler | None:
    """The schedule `config` (conf/scheduler/*.yaml; None or name `none`: no schedule) for
    `optimizer` over `total_steps` optimiser steps in `epochs` epochs; the keys were checked
    by config_checks."""
    name = (config or {}).get("name", "none")
    if name == "none":
        return None
    total_steps = max(1, int(total_steps))
    per_epoch = max(1, total_steps // max(1, epochs))
    if name == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=float(config["max_lr"]),
            total_steps=total_steps,
            pct_start=float(config["pct_start"]),
            div_factor=float(config["div_factor"]),
            final_div_factor=float(config["final_div_factor"]),
            cycle_momentum=bool(config["cycle_momentum"]),
        )
    warmup = round(float(config["warmup_epochs"]) * per_epoch)
    if name == "cosine":
        base_lr = optimizer.param_groups[0]["lr"]
        factor = _Factor("cosine", warmup, total_steps, floor=float(config["min_lr"]) / base_lr)
    elif name == "step":
        period = int(config["step_epochs"]) * per_epoch
        factor = _Factor("step", warmup, total_steps, period=period, gamma=float(config["gamma"]))
    else:
        raise ValueError(f"scheduler.name={name!r}: use one of {', '.join(SCHEDULERS)}")
    return LambdaLR(optimizer, factor)
