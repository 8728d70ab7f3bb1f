"""The per-layer quantization config: the project's common currency.

A :class:`QuantConfig` maps fully-qualified module names (glob patterns, first match wins)
to a :class:`LayerSpec` (weight bits, activation bits, granularities, observers, or "keep
in float"). Standard PTQ writes a uniform one, sensitivity analysis scores layers under
it, mixed precision returns a new one; it round-trips through JSON so that every result
says exactly what was quantized, and how.

Quantizable operations and their names:

* every ``nn.Linear`` and ``nn.Conv2d`` by module name (weights and input activation);
* in timm ViT attention blocks, three pseudo-operations under the attention module's
  name: ``<attn>.matmul_qk`` (both operands q and k of q·kᵀ), ``<attn>.softmax`` (the
  softmax output, the left operand of attn·v, on an unsigned grid) and ``<attn>.matmul_av``
  (the right operand v of attn·v).
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..io import atomic_write
from ..quant.granularity import Granularity, PerChannel, PerTensor, check_activation_granularity, granularity_from_json
from ..quant.observers import OBSERVERS
from ..quant.qtypes import MAX_BITS, MIN_BITS

A_SIGNEDNESS = ("auto", "signed", "unsigned", "asymmetric")
W_SIGNEDNESS = ("signed", "asymmetric")
# the grid of an activation: uniform, log (RepQ-ViT's log√2, log2, an adaptive base) or PTQ4ViT's
# twin-uniform (its softmax form on the attention probabilities, its GELU form elsewhere)
A_QUANTIZERS = ("uniform", "log_sqrt2", "log2", "adalog", "twin_uniform")
# fields added after results were first stored: written to JSON only when not the default, so
# that the keys of every configuration stored before them stay the same
_NEW_FIELDS = {"a_quantizer": "uniform", "w_signedness": "signed"}

# Kept in float by the uniform configs, following common PTQ practice for both families:
# the first layer (patch embedding / CNN stem) and the classifier, and the softmax output.
DEFAULT_KEEP_FLOAT: tuple[str, ...] = ("patch_embed.*", "head", "head_dist", "conv1", "fc", "*.softmax")

# Operations no config quantizes: they run in float in every quantized model here.
NEVER_QUANTIZED: tuple[str, ...] = (
    "LayerNorm", "BatchNorm (folded into the preceding conv)", "GELU / ReLU", "residual adds",
    "pooling", "q·kᵀ output (pre-softmax scores)", "position embedding and class token")


@dataclass(frozen=True)
class LayerSpec:
    """How one operation is quantized. ``None`` bits keep that tensor in float."""

    w_bits: int | None = 8
    a_bits: int | None = 8
    w_granularity: Granularity = PerChannel(0)
    a_granularity: Granularity = PerTensor()
    w_observer: str = "minmax"
    a_observer: str = "minmax"
    a_signedness: str = "auto"  # auto: unsigned grid when calibration saw no negative value
    percentile: float = 99.99
    a_quantizer: str = "uniform"
    w_signedness: str = "signed"  # asymmetric: a zero point per channel (RepQ-ViT's weights)

    def __post_init__(self) -> None:
        for what in ("w_bits", "a_bits"):
            b = getattr(self, what)
            if b is None:
                continue
            if isinstance(b, bool) or not isinstance(b, int):
                raise TypeError(f"{what} must be an int or None, got {b!r}")
            if not MIN_BITS <= b <= MAX_BITS:
                raise ValueError(f"{what} must be between {MIN_BITS} and {MAX_BITS} (or None to keep "
                                 f"the tensor in float), got {b}")
        for what in ("w_observer", "a_observer"):
            if getattr(self, what) not in OBSERVERS:
                raise ValueError(f"{what} must be one of {OBSERVERS}, got {getattr(self, what)!r}")
        if self.a_signedness not in A_SIGNEDNESS:
            raise ValueError(f"a_signedness must be one of {A_SIGNEDNESS}, got {self.a_signedness!r}")
        if self.a_quantizer not in A_QUANTIZERS:
            raise ValueError(f"a_quantizer must be one of {A_QUANTIZERS}, got {self.a_quantizer!r}")
        if self.w_signedness not in W_SIGNEDNESS:
            raise ValueError(f"w_signedness must be one of {W_SIGNEDNESS}, got {self.w_signedness!r}")
        for what in ("w_granularity", "a_granularity"):
            if not isinstance(getattr(self, what), (PerTensor, PerChannel)):
                raise TypeError(f"{what} must be PerTensor() or PerChannel(axis), got {getattr(self, what)!r}")
        check_activation_granularity(self.a_granularity)
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")

    @property
    def keep_float(self) -> bool:
        return self.w_bits is None and self.a_bits is None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["w_granularity"] = self.w_granularity.to_json()
        d["a_granularity"] = self.a_granularity.to_json()
        for name, default in _NEW_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerSpec:
        if not isinstance(d, dict):
            raise ValueError(f"a LayerSpec in JSON is an object such as {{'w_bits': 8, 'a_bits': 8}}, got {d!r}")
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LayerSpec fields {sorted(unknown)}")
        for g in ("w_granularity", "a_granularity"):
            if g in d:
                d[g] = granularity_from_json(d[g])
        return cls(**d)

    def label(self) -> str:
        """The field's notation: "W4A8"; 32 stands for float ("W8A32": weights only)."""
        w = "W32" if self.w_bits is None else f"W{self.w_bits}"
        a = "A32" if self.a_bits is None else f"A{self.a_bits}"
        return w + a


FLOAT = LayerSpec(w_bits=None, a_bits=None)

_LABEL = re.compile(r"W(\d+)(?:A(\d+))?", re.IGNORECASE)
_BOOL_FIELDS = ("quantize_attention", "fold_bn")
# never_quantized is written by to_json for the reader and ignored on reading
_JSON_KEYS = ("default", "rules", "quantize_attention", "fold_bn", "never_quantized")


@dataclass(frozen=True)
class QuantConfig:
    """Module-name patterns → :class:`LayerSpec`; the first matching rule wins."""

    default: LayerSpec = field(default_factory=LayerSpec)
    rules: tuple[tuple[str, LayerSpec], ...] = ()
    quantize_attention: bool = True  # the attention matmuls of timm ViTs
    fold_bn: bool = True  # fold BatchNorm into the preceding conv before quantizing

    def __post_init__(self) -> None:
        if not isinstance(self.default, LayerSpec):
            raise TypeError("default must be a LayerSpec")
        for what in _BOOL_FIELDS:
            if not isinstance(getattr(self, what), bool):
                raise TypeError(f"{what} must be True or False (a JSON boolean), got {getattr(self, what)!r}")
        rules = tuple((str(p), s) for p, s in (self.rules.items() if isinstance(self.rules, dict) else self.rules))
        for pattern, spec in rules:
            if not isinstance(spec, LayerSpec):
                raise TypeError(f"rule {pattern!r} must map to a LayerSpec, got {type(spec).__name__}")
        object.__setattr__(self, "rules", rules)

    # -- lookup
    def spec_for(self, name: str) -> LayerSpec:
        for pattern, spec in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                return spec
        return self.default

    def with_rules(self, rules: dict[str, LayerSpec] | list[tuple[str, LayerSpec]], first: bool = True) -> QuantConfig:
        """A new config with ``rules`` added before (``first``) or after the existing ones."""
        new = tuple(rules.items()) if isinstance(rules, dict) else tuple(rules)
        return replace(self, rules=new + self.rules if first else self.rules + new)

    @classmethod
    def uniform(cls, w_bits: int | None = 8, a_bits: int | None = 8, *,
                w_granularity: Granularity = PerChannel(0), a_granularity: Granularity = PerTensor(),
                w_observer: str = "minmax", a_observer: str = "minmax", a_signedness: str = "auto",
                percentile: float = 99.99,
                keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT, quantize_attention: bool = True,
                fold_bn: bool = True) -> QuantConfig:
        """The same spec for every quantizable operation, except the ``keep_float`` patterns.

        ``keep_float`` is a sequence of glob patterns; a single string is one pattern.
        """
        if isinstance(keep_float, str):
            keep_float = (keep_float,)
        spec = LayerSpec(w_bits, a_bits, w_granularity, a_granularity, w_observer, a_observer,
                         a_signedness=a_signedness, percentile=percentile)
        return cls(spec, tuple((p, FLOAT) for p in keep_float), quantize_attention, fold_bn)

    @classmethod
    def from_label(cls, label: str, **kwargs: Any) -> QuantConfig:
        """A uniform config from the field's notation: "W4A8" is 4-bit weights, 8-bit activations.

        32 bits, or no ``A`` part, keeps that tensor in float: "W8A32" and "W8" quantize the
        weights only, "W32A8" the activations only. ``kwargs`` go to :meth:`uniform`
        (granularities, observers, ``keep_float`` ...). :meth:`label` gives the label back.
        """
        if not isinstance(label, str):
            raise TypeError(f"a setting is a string written like 'W4A8', got {label!r}")
        m = _LABEL.fullmatch(label.strip())
        if m is None:
            raise ValueError(f"setting {label!r} is not understood: settings are written like 'W4A8' "
                             "(weight bits, activation bits; 32 or no A part keeps that tensor in float)")
        w_bits, a_bits = (None if b is None or int(b) == 32 else int(b) for b in m.groups())
        if any(b is not None and not MIN_BITS <= b <= MAX_BITS for b in (w_bits, a_bits)):
            raise ValueError(f"setting {label!r}: bits must be between {MIN_BITS} and {MAX_BITS}, "
                             "or 32 to keep that tensor in float")
        try:
            return cls.uniform(w_bits, a_bits, **kwargs)
        except ValueError as e:
            raise ValueError(f"setting {label!r}: {e}") from None

    def label(self) -> str:
        """The default spec's label ("W4A8"); :meth:`from_label` reads it back."""
        return self.default.label()

    def describe(self) -> str:
        """One paragraph: the default spec, the rules, what never is quantized."""
        d = self.default

        def spec_text(s: LayerSpec) -> str:
            if s.keep_float:
                return "float"
            w = "float weights" if s.w_bits is None else f"{s.w_bits}-bit {s.w_granularity} weights ({s.w_observer})"
            a = ("float inputs" if s.a_bits is None else
                 f"{s.a_bits}-bit {s.a_granularity} inputs ({s.a_observer}, {s.a_signedness} grid)")
            return f"{w}, {a}"

        lines = [f"default: {spec_text(d)}"]
        lines += [f"{p}: {spec_text(s)}" for p, s in self.rules]
        lines.append(f"attention matmuls {'quantized' if self.quantize_attention else 'float'}; "
                     f"BatchNorm {'folded into convs' if self.fold_bn else 'kept'}")
        lines.append("never quantized: " + ", ".join(NEVER_QUANTIZED))
        return "\n".join(lines)

    # -- JSON
    def to_json(self) -> dict[str, Any]:
        return {"default": self.default.to_json(),
                "rules": [[p, s.to_json()] for p, s in self.rules],
                "quantize_attention": self.quantize_attention,
                "fold_bn": self.fold_bn,
                "never_quantized": list(NEVER_QUANTIZED)}

    @classmethod
    def from_json(cls, d: dict[str, Any] | str) -> QuantConfig:
        if isinstance(d, str):
            d = json.loads(d)
        if not isinstance(d, dict) or "default" not in d:
            raise ValueError("a QuantConfig JSON object needs at least a 'default' LayerSpec")
        unknown = sorted(set(d) - set(_JSON_KEYS))
        if unknown:
            raise ValueError(f"unknown QuantConfig keys {unknown}: the known ones are {list(_JSON_KEYS)}")
        rules = d.get("rules", [])
        if not isinstance(rules, (list, tuple)) or not all(isinstance(r, (list, tuple)) and len(r) == 2
                                                            for r in rules):
            raise ValueError(f"QuantConfig 'rules' must be a list of [pattern, LayerSpec] pairs, got {rules!r}")
        # a non-boolean ("false", 0) raises in __post_init__ rather than being read as truthy
        return cls(LayerSpec.from_json(d["default"]), tuple((p, LayerSpec.from_json(s)) for p, s in rules),
                   d.get("quantize_attention", True), d.get("fold_bn", True))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def save(self, path: str | Path) -> None:
        atomic_write(path, self.dumps() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> QuantConfig:
        return cls.from_json(Path(path).read_text())
