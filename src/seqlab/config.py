"""The whole config checked once, before anything is built: a bad value is one line naming the key and the value.

`check_config` raises the first problem it finds as a `ConfigError` (exit code 2, status `bad_config`):

1. **Missing values.** A `???` left in the config (`data=text_file` without `data.path`), or an
   interpolation that cannot be computed.
2. **Types, from the targets' signatures.** Every node with a `_target_` (data, model, optim, trainer,
   logger, each callback, a schedule) is checked against the type hints of its target's `__init__`:
   `hidden_size: int` rejects `1.5` and `abc`, `residual: bool` rejects `yes`, a `Literal` lists its
   choices, and a key the target does not take is named (unless it takes `**kwargs`). A new model, callback
   or schedule needs no edit here: its type hints are its schema.
3. **Ranges, from `RULES`** by key name: the first rule whose pattern (fnmatch, on the dotted key such as
   `model.hidden_size`) matches a value applies. Names are conventions, so they cover new keys across
   groups: `*_size`, `*_dim`, `*.num_*` are positive integers, `*.dropout` is in [0, 1), `*.lr` is
   positive, and any other integer in `model` must be positive. To add a rule, add one line, e.g.
   `("model.init_range", Number(lo=0, lo_open=True, null=True)),` — above any broader pattern it should
   override. A key no rule matches must still be finite: `nan` and `inf` are nowhere a valid setting.
4. **Across keys**, the short list at the end of `check_config`: a window longer than the context, a budget
   that never ends, a schedule that cannot run as asked (a cosine warmup longer than the run), both `resume`
   and `ckpt_path`, a GPU that is not there. Two settings of one target that must agree (tie_weights with the
   sizes, r_min < r_max) are checked by that target, which knows them; run.py turns its ConfigError into the
   same one line.

Types and ranges are checked key by key in config order, so the message names the first bad key.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, Union, get_args, get_origin

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from seqlab.errors import ConfigError

NOT_CHECKED = ("hydra", "paths")  # Hydra's own node; paths are checked where they are written


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number:
    """A number in [lo, hi] (an open end with lo_open/hi_open); `integer` for whole numbers only; `also`
    lists single extra values (e.g. -1); `note` follows the message. `null`: True allows None, False
    rejects it, None leaves it to the type hint of the target that takes the key."""

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False
    null: bool | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()
    note: str = ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.null is not False
        if not (is_int(value) if self.integer else is_number(value)):
            return False
        if value in self.also:
            return True
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return math.isfinite(value) and above and below

    def wording(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo == 0 and self.hi == math.inf:
            text = ("a positive " if self.lo_open else "a non-negative ") + kind.split()[-1]
        elif self.lo == 1 and self.integer and self.hi == math.inf:
            text = "a positive integer"
        elif self.integer:
            text = f"an integer from {self.lo:.0f}" + (f" to {self.hi:.0f}" if self.hi < math.inf else " up")
        elif self.hi == math.inf:
            text = f"a number {'>' if self.lo_open else '≥'} {self.lo:g}"
        else:
            text = f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        text += "".join(f" or {v}" for v in self.also) + (", or null" if self.null else "")
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class OneOf:
    choices: tuple

    def accepts(self, value: Any) -> bool:
        return value in self.choices

    def wording(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


POSITIVE_INT = Number(lo=1, integer=True)
POSITIVE = Number(lo=0, lo_open=True)
NON_NEGATIVE = Number(lo=0)
FRACTION = Number(lo=0, hi=1, hi_open=True)

# (pattern on the dotted key, rule): the first match applies. A key no rule matches: any integer in `model`
# must be positive, any other number finite. A list's rule applies to each element.
RULES: list[tuple[str, Number | OneOf]] = [
    ("seed", Number(lo=0, hi=2**32 - 1, integer=True, null=False)),  # numpy's range, which Lightning seeds too
    ("threads", Number(lo=1, integer=True, null=True, note="null: the launcher's share of the cores")),
    ("trainer.max_steps", Number(lo=1, integer=True, also=(-1,), note="-1: train by epochs or time")),
    ("trainer.max_epochs", Number(lo=1, integer=True, also=(-1,), null=True)),
    (
        "trainer.val_check_interval",
        Number(
            lo=1, integer=True, null=True, note="training steps between validations, or null to validate at epoch ends"
        ),
    ),
    ("trainer.gradient_clip_val", Number(lo=0, null=True, note="0 or null: no clipping")),
    ("trainer.log_every_n_steps", POSITIVE_INT),
    ("trainer.num_sanity_val_steps", Number(lo=0, integer=True, also=(-1,), null=True)),
    ("callbacks.progress.refresh_rate", Number(lo=0, integer=True, note="0: no progress bar")),
    ("callbacks.samples.length", Number(lo=0, integer=True)),
    ("data.splits", Number(lo=0, hi=1, lo_open=True)),  # train, val, test shares of one file
    ("data.episodes", POSITIVE_INT),  # train, val, test episode counts
    ("data.sequences", POSITIVE_INT),  # state_tracking: train, val, test sequence counts
    ("data.*_sequences", POSITIVE_INT),  # state_tracking: per length bucket, and streams
    ("data.train_lengths", POSITIVE_INT),  # state_tracking: shortest and longest training length
    ("data.stream_*", POSITIVE_INT),  # induction: stream_lengths, stream_count, stream_chunk
    ("data.num_symbols", Number(lo=2, integer=True)),  # induction (the trigger is one more), markov
    ("data.pairs", POSITIVE_INT),  # mqar: key-value pairs per sequence (recall: one number)
    ("data.lengths", POSITIVE_INT),  # mqar: one sequence length per K; markov: split lengths
    ("data.examples", POSITIVE_INT),  # mqar: train, val, test sequences per K
    ("data.power_a", Number(lo=0, hi=1, lo_open=True, note="Zoology's power law on the query gaps; 1: uniform")),
    ("*.max_share", Number(lo=0, hi=1, lo_open=True, note="1: no limit")),
    ("*.lr", POSITIVE),
    ("*.temperature", POSITIVE),
    ("*.weight_decay", NON_NEGATIVE),
    ("*.momentum", NON_NEGATIVE),
    ("*.dropout", FRACTION),
    ("*.betas", Number(lo=0, hi=1, hi_open=True)),
    ("*.every_n_seconds", POSITIVE),
    ("*.every_n_*", POSITIVE_INT),
    ("*_every_n_steps", POSITIVE_INT),  # spectra_every_n_steps (Lightning's reload_*_every_n_epochs takes 0)
    ("schedule.scheduler.warmup_steps", Number(lo=0, integer=True)),
    ("schedule.scheduler.constant_epochs", Number(lo=0, integer=True)),
    ("schedule.scheduler.patience", Number(lo=0, integer=True)),
    ("schedule.scheduler.floor", Number(lo=0, hi=1, note="the share of optim.lr the cosine ends at")),
    ("schedule.scheduler.gamma", Number(lo=0, hi=1)),
    ("schedule.scheduler.factor", Number(lo=0, hi=1, hi_open=True)),  # ReduceLROnPlateau refuses 1
    ("model.r_min", Number(lo=0, hi=1, hi_open=True)),  # eigenvalue radii of a stable recurrence
    ("model.r_max", Number(lo=0, hi=1, hi_open=True)),
    ("model.init_range", Number(lo=0, lo_open=True, null=True)),
    ("*_size", POSITIVE_INT),
    ("*_dim", POSITIVE_INT),
    ("*_length", POSITIVE_INT),
    ("*.num_*", POSITIVE_INT),
    ("matmul_precision", OneOf(("highest", "high", "medium"))),
]


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad value in `cfg`; build nothing, train nothing."""
    values = dict(_leaves(cfg, ""))
    hints = {key: hint for path, node in _targets(cfg, "") for key, hint in _hints(path, node)}
    for key, value in values.items():  # in config order, so the first bad key is the one reported
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"{key}={_show(value)}: must be {_describe(hints[key])}")
        _check_range(key, value)

    # checks across keys
    window, context_length = values.get("model.window"), values.get("data.context_length")
    if window is not None and context_length is not None and window > context_length:
        raise ConfigError(f"model.window={window}: larger than data.context_length={context_length}")
    if values.get("trainer.val_check_interval") is None and values.get("trainer.check_val_every_n_epoch") is None:
        raise ConfigError(
            "trainer.val_check_interval=null with trainer.check_val_every_n_epoch=null: the run would never "
            "validate; give one of them"
        )
    if values.get("resume") is not None and values.get("ckpt_path") is not None:
        raise ConfigError(f"resume={values['resume']} and ckpt_path={values['ckpt_path']}: give one of them")
    _check_schedule(values)
    _check_budget(values)
    _check_accelerator(values)


def _check_schedule(values: dict[str, Any]) -> None:
    """A schedule that would train with a broken lr: no length to decay over, a warmup that never ends, or a
    plateau schedule that reads val/loss at epoch ends without validating there."""
    target = values.get("schedule.scheduler._target_") or ""
    max_steps, warmup = values.get("trainer.max_steps", -1), values.get("schedule.scheduler.warmup_steps")
    no_length = all(values.get(f"trainer.{key}", -1) in (None, -1) for key in ("max_steps", "max_epochs"))
    if target.endswith("warmup_cosine") and no_length and not values.get("trainer.max_time"):
        raise ConfigError("schedule=cosine: its length comes from trainer.max_steps, max_epochs or max_time; set one")
    if target.endswith("warmup_cosine") and is_int(warmup) and is_int(max_steps) and 0 < max_steps < warmup:
        raise ConfigError(  # the lr would still be rising at the last step, at max_steps / warmup_steps of optim.lr
            f"schedule.scheduler.warmup_steps={warmup}: longer than trainer.max_steps={max_steps}, so the run would "
            f"end in the warmup at {max_steps / warmup:.2g} × optim.lr; lower it or raise trainer.max_steps"
        )
    plateau = target.endswith("ReduceLROnPlateau") and values.get("schedule.interval") == "epoch"
    if plateau and values.get("trainer.check_val_every_n_epoch") is None:
        raise ConfigError(
            "schedule=plateau steps at epoch ends on val/loss: validate at epoch ends "
            "(trainer.check_val_every_n_epoch=1 trainer.val_check_interval=null)"
        )


def _check_budget(values: dict[str, Any]) -> None:
    """Every accepted budget ends: trainer.max_steps > 0 (its range rule), or -1 with max_epochs or max_time."""
    max_steps, max_epochs = values.get("trainer.max_steps", -1), values.get("trainer.max_epochs")
    if max_steps == -1 and values.get("trainer.max_time") is None and not (is_int(max_epochs) and max_epochs > 0):
        raise ConfigError(
            f"trainer.max_steps=-1 with trainer.max_epochs={_show(max_epochs)}: never ends; give trainer.max_steps=N "
            "or trainer.max_epochs=N (or a trainer.max_time)"
        )


def _choice(group: str) -> str | None:
    try:
        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # no Hydra context
        return None


def _leaves(node: DictConfig, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, resolved plain value) of every leaf; a list is one leaf."""
    for key in node:
        path = f"{prefix}{key}"
        if not prefix and key in NOT_CHECKED:
            continue
        if OmegaConf.is_missing(node, key):
            group = path.split(".")[0]
            choice = _choice(group)
            given = f" ({group}={choice} needs it)" if choice and "." in path else ""
            raise ConfigError(f"{path}=???: no value given{given}; add {path}=<value> to the command")
        try:
            value = node[key]
        except Exception as err:  # an interpolation that cannot resolve, e.g. a resolver fed a word
            raw = OmegaConf.to_container(node, resolve=False)[key]
            raise ConfigError(f"{path}={raw}: cannot compute it: {err}".splitlines()[0]) from None
        if isinstance(value, DictConfig):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value


def _targets(node: DictConfig, prefix: str) -> Iterator[tuple[str, DictConfig]]:
    """(dotted key, node) of every node with a `_target_`."""
    if "_target_" in node:
        yield prefix.rstrip("."), node
    for key in node:
        if (prefix or key not in NOT_CHECKED) and isinstance(node.get(key), DictConfig):
            yield from _targets(node[key], f"{prefix}{key}.")


def _parameters(target: str) -> tuple[dict[str, inspect.Parameter], bool] | None:
    """The settings a target takes, and whether it takes any other (**kwargs). A class whose __init__ passes
    **kwargs up to its base (rnn -> Recurrent) takes what the bases name: its MRO is followed up to torch's
    nn.Module, whose own *args/**kwargs take nothing a config could set."""
    from hydra.utils import get_object
    from torch import nn

    try:
        obj = get_object(target)
        classes = [c for c in obj.__mro__ if "__init__" in vars(c)] if isinstance(obj, type) else [obj]
        params: dict[str, inspect.Parameter] = {}
        for c in classes:
            if c in (nn.Module, object):
                return params, False
            own = inspect.signature(c, eval_str=True) if c is obj else inspect.signature(c.__init__, eval_str=True)
            named = {n: p for n, p in own.parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
            params.update({n: p for n, p in named.items() if n not in params and n != "self"})
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.parameters.values()):
                return params, False
        return params, True
    except (ImportError, AttributeError, ValueError, TypeError, NameError):
        return None  # cannot import it or read its hints: Hydra will say so when it builds it


def _hints(path: str, node: DictConfig) -> Iterator[tuple[str, Any]]:
    """(dotted key, type hint) for each key of a `_target_` node; a key its target does not take is an error."""
    target = str(node._target_)
    found = _parameters(target)
    if found is None:
        return
    params, takes_any = found
    for key in node:
        param = params.get(str(key))
        if str(key).startswith("_") or isinstance(node.get(key), DictConfig):
            continue  # Hydra's _partial_ etc., or an object Hydra builds (it is a target node of its own)
        if param is None and not takes_any:
            known = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
            raise ConfigError(f"{path}.{key}: {target} takes no such setting (it takes {', '.join(known)})")
        if param is not None:
            yield f"{path}.{key}", param.annotation


def _matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits a type hint. Hints it cannot judge (a TypeVar, a callable) pass."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is inspect.Parameter.empty or hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (bool, int, float, str):
        return {bool: isinstance(value, bool), int: is_int(value), float: is_number(value)}.get(
            hint, isinstance(value, str)
        )
    if origin in (list, tuple, Sequence, Iterable):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, dict | Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    """How a type hint reads in a message; parts a config cannot hold (a Tensor, an Accelerator) are left out."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        literals = [v for a in args if get_origin(a) is Literal for v in get_args(a)]
        rest = [a for a in args if get_origin(a) is not Literal]
        parts = [_describe(a) for a in rest] + ([_describe(Literal[tuple(literals)])] if literals else [])
        parts = [p for i, p in enumerate(parts) if p and p not in parts[:i]]
        return " or ".join(parts)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence, Iterable):
        return "a list" + (f" of {len(args)}" if origin is tuple and args and args[-1] is not Ellipsis else "")
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, "")


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _check_range(key: str, value: Any) -> None:
    rule = next((r for pattern, r in RULES if fnmatchcase(key, pattern)), None)
    for item in value if isinstance(value, list) else [value]:
        if rule is not None:
            ok, wording = rule.accepts(item), rule.wording()
        elif key.startswith("model.") and is_int(item):  # sizes, layers, heads: whatever a model calls them
            ok, wording = item >= 1, "a positive integer"
        else:
            ok, wording = not is_number(item) or math.isfinite(item), "a finite number"
        if not ok:
            raise ConfigError(f"{key}={_show(value)}: must be {wording}")


def _check_accelerator(values: dict[str, Any]) -> None:
    """A GPU asked for where there is none: one line now, not Lightning's traceback after the data is read."""
    import torch

    accelerator, devices = values.get("trainer.accelerator"), values.get("trainer.devices")
    found = {
        "cuda": torch.cuda.device_count(),
        "mps": int(torch.backends.mps.is_available()),
    }
    found["gpu"] = found["cuda"] or found["mps"]
    if accelerator not in found:
        return
    strategy = values.get("trainer.strategy")
    via = f" (trainer.strategy={strategy})" if strategy not in (None, "auto") else ""
    if not found[accelerator]:
        raise ConfigError(
            f"trainer.accelerator={accelerator}{via}: no {accelerator.upper()} device on this machine; "
            "use trainer=default (picks what there is) or trainer=cpu"
        )
    if is_int(devices) and devices > found[accelerator]:
        raise ConfigError(f"trainer.devices={devices}: this machine has {found[accelerator]} {accelerator} device(s)")
