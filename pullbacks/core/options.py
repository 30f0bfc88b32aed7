"""Every option of the method, declared once: its default and its meaning.

:class:`GateOptions` configures the soft gates (``soft_gates``, ``excitation_pullback``);
:class:`AscentOptions` adds the projected gradient ascent (``gradient_ascent`` and all
that is built on it: grids, sweeps, one-image explanations, the apps, the evaluation).
Both are frozen and validated when built, so a bad value fails before any computation,
and no attribute (nor the temperatures mapping) can be changed afterwards::

    opts = AscentOptions(temperature=1.0, steps=10)
    opts.replace(alpha=5.0)                       # a validated copy

Defaults of the temperatures come from the rule table (``table.py``); the validators
from ``validators.py``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from .errors import bad_option
from .recipes import DEFAULT_RECIPE, RECIPES, recipe_values
from .rules.base import Rule
from .table import KEYWORDS, check_user_rules, default_temperatures, variant_names
from .validators import (
    PLAIN_KINDS,
    choice,
    clip_range,
    plain_from_text,
    plain_number,
    positive_integer,
    positive_number,
    temperature,
)

GATES = ("sigmoid", "normal_cdf")  # s in relu'(z) -> s(z / T)
POOLS = ("soft", "detached")  # the soft max pool's backward (see docs/method.md)
METHODS = ("pullback", "gradient")  # ascend along the excitation pullback, or the vanilla gradient


class Frozen(dict):
    """A read-only, hashable mapping (family -> temperature, rule -> variant); a dict, so it
    serialises as one."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("options are frozen: use options.replace(temperatures={...}) (or variants={...})")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _read_only  # type: ignore[assignment]  # every mutator refuses

    def __reduce__(self) -> tuple:  # copy and pickle build it whole, never item by item
        return (Frozen, (dict(self),))


def user_rules(value: Any) -> tuple[Rule, ...]:
    """``rules=``: None or a sequence of rules (``pullbacks.GateRule``), as a tuple."""
    if value is None:
        return ()
    if isinstance(value, Rule):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"rules must be a list of pullbacks.GateRule objects, got {value!r}")
    bad = [r for r in value if not isinstance(r, Rule)]
    if bad:
        raise TypeError(f"rules must be pullbacks.GateRule objects (see docs/extending.md), got {bad[0]!r}")
    check_user_rules(value)
    return tuple(value)


def family_temperatures(value: Any, rules: tuple[Rule, ...] = ()) -> Mapping[str, float]:
    """The full per-family temperature mapping: the table's defaults (with ``rules``) with
    ``value`` (a partial mapping, or None) applied; an unknown family is a ValueError
    listing the known ones."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"temperatures must be a mapping such as {{'gelu': 1.0}}, got {value!r}")
    defaults = default_temperatures(rules)
    unknown = sorted(set(value) - set(defaults), key=str)
    if unknown:
        keywords = ", ".join(f"{k}: {v}" for k, v in KEYWORDS.items())
        raise ValueError(
            f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))} in "
            f"temperatures; known: {', '.join(defaults)} (these have options of their own: "
            f"{keywords})"
        )
    return Frozen({**defaults, **{k: temperature(v, f"temperatures[{k!r}]") for k, v in value.items()}})


def rule_variants(value: Any, rules: tuple[Rule, ...] = ()) -> Mapping[str, str]:
    """``variants={"sdpa": "held"}``: the variant of each rule that has several, by the rule's
    name; unknown rules or variants are a ValueError listing the known ones."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"variants must be a mapping such as {{'sdpa': 'held'}}, got {value!r}")
    known = variant_names(rules)
    for name, variant in value.items():
        if name not in known:
            raise ValueError(
                f"unknown rule {name!r} in variants; rules with variants: "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in known.items())
            )
        choice(variant, f"variants[{name!r}]", known[name])
    return Frozen({**{k: v[0] for k, v in known.items()}, **value})


class _FromRecipe:
    """The default of an option that its recipe sets."""

    def __repr__(self) -> str:
        return "<from the recipe>"

    def __reduce__(self) -> str:
        return "FROM_RECIPE"


FROM_RECIPE: Any = _FromRecipe()
_FROM_RECIPE_FIELDS = ("temperature", "pool_temperature", "gate", "pool", "eps")


# --------------------------------------------------------------------------- options

OptionsT = TypeVar("OptionsT", bound="GateOptions")


@dataclass(frozen=True)
class GateOptions:
    """How the backward pass is softened.

    temperature       T of the ReLU-family gates: ``relu'(z) = 1[z > 0]`` becomes ``s(z / T)``
    pool_temperature  T of the soft max pool (None: ``temperature``)
    gate              ``s``: "sigmoid" (the paper) or "normal_cdf" (the authors' later variant)
    pool              "soft" (the gradient of the soft max pool, the paper) or "detached"
                      (its softmax weights only, the authors' later variant)
    temperatures      T of the other families, by name (defaults: the rule table's, see
                      ``pullbacks.core.table.default_temperatures()``); a partial mapping overrides
                      only what it names
    recipe            "excitation" (the seed paper, the default) or "semantic" (the authors'
                      follow-up code): the values of every option above that is not given
                      (``pullbacks.core.recipes``)
    variants          the variant of each rule that has several, by rule name (``{"sdpa": "held",
                      "mha": "inputs"}``; default: the recipe's)
    rules             rules of your own (``pullbacks.GateRule``), added to the table; they win over
                      built-in rules for the functions they name (docs/extending.md)
    strict            raise (instead of warning) when something kept its ordinary nonlinear gradient;
                      ``"products"``: also when products of two input-dependent tensors were met
    replay            recompute gate inputs that came out of eval-mode batch norms instead of
                      keeping a copy (saves memory; the result is bit for bit the same)

    An option given explicitly wins over the recipe for that one value, also after
    ``replace(recipe=...)``; ``given`` lists them.
    """

    temperature: float = FROM_RECIPE
    pool_temperature: float | None = FROM_RECIPE
    gate: str = FROM_RECIPE
    pool: str = FROM_RECIPE
    temperatures: Mapping[str, float] | None = None
    recipe: str = DEFAULT_RECIPE
    variants: Mapping[str, str] | None = None
    rules: tuple[Rule, ...] = ()
    strict: bool | str = False
    replay: bool = True
    if TYPE_CHECKING:
        _given: ClassVar[dict[str, Any]]  # set per instance in __post_init__ (not a field)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen
        recipe = recipe_values(self.recipe)
        given = {
            f: getattr(self, f) for f in _FROM_RECIPE_FIELDS if hasattr(self, f) and getattr(self, f) is not FROM_RECIPE
        }
        given_maps = {
            "temperatures": dict(self.temperatures or {})
            if isinstance(self.temperatures, Mapping)
            else self.temperatures,
            "variants": dict(self.variants or {}) if isinstance(self.variants, Mapping) else self.variants,
        }
        for f in _FROM_RECIPE_FIELDS:
            if hasattr(self, f) and f not in given:
                set_(f, recipe[f])
        set_("temperature", temperature(self.temperature))
        if self.pool_temperature is not None:
            set_("pool_temperature", temperature(self.pool_temperature, "pool_temperature"))
        choice(self.gate, "gate", GATES)
        choice(self.pool, "pool", POOLS)
        set_("rules", user_rules(self.rules))
        if given_maps["temperatures"] is not None and not isinstance(given_maps["temperatures"], Mapping):
            family_temperatures(given_maps["temperatures"], self.rules)  # raises the TypeError
        set_(
            "temperatures",
            family_temperatures({**recipe["temperatures"], **(given_maps["temperatures"] or {})}, self.rules),
        )
        if given_maps["variants"] is not None and not isinstance(given_maps["variants"], Mapping):
            rule_variants(given_maps["variants"], self.rules)  # raises the TypeError
        set_("variants", rule_variants({**recipe["variants"], **(given_maps["variants"] or {})}, self.rules))
        if (
            self.strict not in (True, False, "products")
            or isinstance(self.strict, (int, float))
            and not isinstance(self.strict, bool)
        ):
            raise TypeError(f"strict must be True, False or 'products', got {self.strict!r}")
        for flag in ("replay",):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        set_("_given", {**given, **{k: v for k, v in given_maps.items() if v}})

    @property
    def given(self) -> dict:
        """The options given explicitly (the rest come from the recipe)."""
        return dict(self._given)

    @property
    def pool_t(self) -> float:
        """The max-pool temperature in effect."""
        return self.temperature if self.pool_temperature is None else self.pool_temperature

    def temperature_of(self, family: str) -> float:
        """The temperature of a family of the rule table ("relu", "max_pool", "silu", ...)."""
        if family == "relu":
            return self.temperature
        if family == "max_pool":
            return self.pool_t
        return cast(Mapping[str, float], self.temperatures)[family]  # built in __post_init__

    def variant_of(self, rule: str) -> str:
        """The variant in effect of the rule named ``rule`` ("sdpa", "mha")."""
        return cast(Mapping[str, str], self.variants)[rule]  # built in __post_init__

    @property
    def gates(self) -> GateOptions:
        """Only the gate options."""
        return build(GateOptions, self, {})

    def replace(self: OptionsT, **changes: Any) -> OptionsT:
        """A validated copy with ``changes`` (unknown names are a TypeError listing the valid ones)."""
        return build(type(self), self, changes)


@dataclass(frozen=True)
class AscentOptions(GateOptions):
    """The projected, L2-normalised gradient ascent (docs/method.md, "The ascent"), plus the
    gate options it uses when ``method="pullback"``.

    steps    iterations (the paper: 5; also 1 and 10)
    alpha    L2 length of each step, in the [-1, 1] input space
    eps      L2 radius of the projection around the start (None: no projection; default: the
             recipe's, 100 for "excitation", none for "semantic")
    clip     value range every step is clamped to (None: no clamping)
    method   "pullback" (excitation pullback) or "gradient" (vanilla gradient)
    """

    steps: int = 5
    alpha: float = 20.0
    eps: float | None = FROM_RECIPE
    clip: tuple[float, float] | None = (-1.0, 1.0)
    method: str = "pullback"

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_integer(self.steps, "steps")
        object.__setattr__(self, "alpha", positive_number(self.alpha, "alpha"))
        object.__setattr__(self, "eps", positive_number(self.eps, "eps", allow_none=True))
        object.__setattr__(self, "clip", clip_range(self.clip))
        choice(self.method, "method", METHODS)


@dataclass(frozen=True)
class Field:
    """How one option reads in a front end: its ``help`` (declared here once) and its ``kind``,
    which says how text becomes a value (the command line's flags and the app's inputs are
    generated from ``FIELDS``; the value is then validated by the options themselves)."""

    help: str
    kind: str  # temperature | integer | number | optional_number | choice | families | variants | rules | flag | clip
    choices: tuple[str, ...] = ()
    none: str = ""  # what None means for this option ("" : nothing, so None is "not given", like FROM_RECIPE)


FIELDS: dict[str, Field] = {
    "temperature": Field(
        "soft-gate temperature T of the ReLU family (default: the model's recommended one, then the recipe's)",
        "temperature",
    ),
    "pool_temperature": Field(
        "max-pool temperature (default: the temperature, or the model's recommended one)", "temperature"
    ),
    "gate": Field("the soft gate s in relu'(z) -> s(z/T) (default: the recipe's)", "choice", GATES),
    "pool": Field(
        "the soft max pool's backward: its gradient or its softmax weights (default: the recipe's)", "choice", POOLS
    ),
    "temperatures": Field(
        "temperatures of the families beyond ReLU, FAMILY=T,... (default: the rule table's, or "
        "the model's recommendation)",
        "families",
    ),
    "recipe": Field(
        "'excitation' (the seed paper) or 'semantic' (the authors' follow-up code): the rules and "
        "defaults of every option not given",
        "choice",
        tuple(RECIPES),
    ),
    "variants": Field(
        "the variant of each rule that has several, RULE=VARIANT,... (e.g. sdpa=held; default: the recipe's)",
        "variants",
    ),
    "rules": Field("rules of your own, as MODULE:NAME of a GateRule or a list of them (docs/extending.md)", "rules"),
    "strict": Field("fail when nonlinear calls keep their ordinary gradient (default: warn)", "flag"),
    "replay": Field(
        "recompute gate inputs that came out of eval-mode batch norms instead of keeping a copy "
        "(same result, less memory; default: on)",
        "flag",
    ),
    "steps": Field("ascent steps (default: 5, or the model's recommendation for the recipe)", "integer"),
    "alpha": Field(
        "L2 length of a step in the [-1, 1] input space (default: 20, or the model's recommendation)", "number"
    ),
    "eps": Field(
        "L2 radius of the projection around the start, or 'none' (default: the recipe's: excitation 100, "
        "semantic none)",
        "optional_number",
        none="no projection",
    ),
    "clip": Field(
        "value range every step is clamped to, LOW,HIGH (clip=-1,1, the default) or 'none'", "clip", none="no clamping"
    ),
    "method": Field(
        "ascend along the excitation pullback or the vanilla gradient (default: pullback)", "choice", METHODS
    ),
}


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``values`` that are given: "not given" is ``FROM_RECIPE``, the one marker,
    and None for an option where None means nothing else (``FIELDS[name].none``; for eps and clip
    None is a value). Every front end passes its values through here."""
    return {
        k: v
        for k, v in values.items()
        if v is not FROM_RECIPE and not (v is None and k in FIELDS and not FIELDS[k].none)
    }


def _pairs(name: str, text: str, example: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise bad_option(name, text, f"KEY=VALUE pairs such as {example}")
        pairs[key.strip()] = value.strip()
    return pairs


def _import_rules(text: str) -> tuple[Rule, ...]:
    import importlib

    found: list = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        module, sep, name = item.partition(":")
        if not sep or not module or not name:
            raise bad_option("rules", item, "MODULE:NAME such as myrules:ELU")
        try:
            value = getattr(importlib.import_module(module), name)
        except ImportError as e:
            raise bad_option("rules", item, f"an importable module ({e}; is it on PYTHONPATH?)") from None
        except AttributeError:
            raise bad_option("rules", item, f"a name that {module!r} has (it has no {name!r})") from None
        found += list(value) if isinstance(value, (list, tuple)) else [value]
    return user_rules(found)


def from_text(name: str, text: str) -> Any:
    """The value of option ``name`` (a key of ``FIELDS``) written as text, as a command-line flag
    or an app's box takes it, validated like the keyword; errors name the option. Numbers as
    ``0.3``, mappings as ``gelu=0.5,attention=1``, rules as ``MODULE:NAME`` (imported), clip as
    ``-1,1``, ``none`` for an optional number or no clip, flags as ``true``/``false``."""
    kind, t = FIELDS[name].kind, str(text).strip()
    if kind in PLAIN_KINDS:
        return plain_from_text(name, kind, text, FIELDS[name].choices)
    if kind == "families":
        pairs = _pairs(name, t, "gelu=1.0,attention=1.5")
        try:
            values = {k: float(v) for k, v in pairs.items()}
        except ValueError:
            raise bad_option(name, text, "FAMILY=NUMBER pairs such as gelu=1.0") from None
        family_temperatures(values)
        return values
    if kind == "variants":
        pairs = _pairs(name, t, "sdpa=held")
        rule_variants(pairs)
        return pairs
    if kind == "rules":
        return _import_rules(t)
    raise AssertionError(f"no text form for the kind {kind!r}")  # pragma: no cover - FIELDS is closed


def build(cls: type[OptionsT], options: GateOptions | None, overrides: dict) -> OptionsT:
    """``cls`` from ``options`` (any options object, a number for the temperature, or None
    for the defaults) with the keyword ``overrides`` applied; the one place keywords
    become options. What ``options`` took from its recipe is taken from the recipe again
    (so ``replace(recipe="semantic")`` changes every value not given explicitly); partial
    ``temperatures``/``variants`` mappings merge with the given ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    if isinstance(plain_number(options), numbers.Real) and not isinstance(options, bool):
        options, overrides = None, {"temperature": plain_number(options), **overrides}  # soft_gates(0.3)
    if options is not None and not isinstance(options, GateOptions):
        raise TypeError(
            f"options must be a GateOptions or AscentOptions (or a temperature), got {type(options).__name__}"
        )
    base: dict = {}
    if options is not None:
        base = {
            f.name: getattr(options, f.name)
            for f in dataclasses.fields(options)
            if f.name in names and f.name not in (*_FROM_RECIPE_FIELDS, "temperatures", "variants")
        }
        base.update({k: v for k, v in options._given.items() if k in names})
    if "rules" in overrides and isinstance(base.get("temperatures"), Mapping):  # keep what the new rules know
        known = default_temperatures(user_rules(overrides["rules"]))
        base["temperatures"] = {k: v for k, v in base["temperatures"].items() if k in known}
    for mapping in ("temperatures", "variants"):
        if isinstance(base.get(mapping), Mapping) and isinstance(overrides.get(mapping), Mapping):
            overrides = {**overrides, mapping: {**base[mapping], **overrides[mapping]}}
    return cls(**{**base, **overrides})
