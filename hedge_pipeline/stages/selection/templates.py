"""Portfolio templates: which options a book is short, how many, and how its time is split.

Templates are JSON files in the schema researchers already keep. The packaged ones live next
to this module; a directory named by ``HEDGE_PORTFOLIO_DIR`` adds more and may override a
packaged name. A template's name is its file name without ``.json`` (and its ``name`` field
must agree), so a name always points at exactly one file.

Everything that can be judged from the file alone is judged at load time, so a typo fails
before any data is read: unknown fields, percentile ranges, split ratios, weights. What needs
the data (unknown weekly codes, nothing matching) is judged by ``selection``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hedge_pipeline.runtime.settings import Settings
from hedge_pipeline.tables.schema import WEEKLY_CODE_RE

PACKAGED_DIR = Path(__file__).with_name("templates")
ENV_DIR = Settings.variable("portfolio_dir")  # HEDGE_PORTFOLIO_DIR, read by runtime.settings
DEFAULT_TEMPLATE = "atm_book"
# What ``hedge run`` selects with on a history source (HEDGE_SOURCE=history): daily bars.
HISTORY_TEMPLATE = "daily_history"
RATIO_TOLERANCE = 1e-9

OptionType = Literal["C", "P", "both"]
SplitMode = Literal["per_code", "global", "as_of"]
SortKey = Literal["volume", "open_interest", "atm_distance", "spread"]
Percentile = Annotated[float, Field(ge=0.0, le=100.0)]


class TemplateError(ValueError):
    """A template that cannot be used; the message names the file, the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered_range(value: tuple[float, float]) -> tuple[float, float]:
    lo, hi = value
    if lo >= hi:
        raise ValueError(f"percentile range [{lo:g}, {hi:g}] must have lo < hi")
    return value


class SelectionCriteria(_Strict):
    """Which options of a weekly code are candidates, and in which order they are taken."""

    option_type: OptionType = "both"
    strike_range: tuple[Percentile, Percentile] = Field(
        default=(0.0, 100.0),
        description="[lo, hi] percentiles of moneyness among the code's options, 0..100",
    )
    weekly_codes: Literal["all"] | list[str] = "all"
    min_data_size: int = Field(default=1, ge=1, description="minimum rows with iv_status 'ok'")
    sort_by: SortKey = "atm_distance"

    _check_range = field_validator("strike_range")(_ordered_range)

    @field_validator("weekly_codes", mode="before")
    @classmethod
    def _check_codes(cls, value: Any) -> Any:
        """One message per mistake, rather than pydantic's report against each union member."""
        if value == "all":
            return value
        if not isinstance(value, list) or not value:
            raise ValueError(f"expected 'all' or a non-empty list of weekly codes, got {value!r}")
        bad = [c for c in value if not (isinstance(c, str) and WEEKLY_CODE_RE.match(c))]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a weekly code (letters, digits, '-' and '_' only)")
        return value


class HedgeOption(_Strict):
    """The option of each code a delta-gamma hedger may trade (never one the book is short)."""

    option_type: OptionType = "both"
    strike_range: tuple[Percentile, Percentile] = (25.0, 75.0)
    sort_by: SortKey = "volume"

    _check_range = field_validator("strike_range")(_ordered_range)


class TrainingParams(BaseModel):
    """What the model stages read. Known keys are typed; stage-specific extras may be added
    (JSON scalars only), so a new knob does not need a schema change."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, bool | int | float | str]

    sequence_length: int = Field(default=32, ge=1, description="bars of history per sample")
    horizon: int = Field(default=12, ge=1, description="bars ahead the targets look")
    batch_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    hpo_trials: int = Field(default=0, ge=0, description="Optuna trials; 0 trains once")
    n_steps: int | None = Field(
        default=None, ge=1, description="specialists' decisions per episode; default: profile's"
    )
    rebalance_bars: int | None = Field(
        default=None, ge=1, description="specialists' bars between decisions; default: profile's"
    )
    warm_start: bool = Field(
        default=False, description="specialists start from their predecessor's weights"
    )


class SplitRatios(_Strict):
    """Shares of a timeline's usable bars (after the embargoes); each positive, summing to 1."""

    train: float = Field(default=0.70, gt=0.0)
    validation: float = Field(default=0.15, gt=0.0)
    test: float = Field(default=0.15, gt=0.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitRatios:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > RATIO_TOLERANCE:
            raise ValueError(
                f"train + validation + test must be 1, got {self.train:g} + "
                f"{self.validation:g} + {self.test:g} = {total:.12g}"
            )
        return self


class TimeSeriesParams(_Strict):
    """How each code's bars are cut into train, validation and test.

    ``per_code`` splits each weekly code's own life by time, so every code has a held-out
    test period. ``global`` makes one time split over the union of the codes' timelines: all
    codes share one underlying, so this keeps one code's test period from overlapping
    another's training period in calendar time (no leak through the common underlying), at
    the price of early codes having little or no test data. ``as_of`` (a walk-forward test of
    the lineage; the selection's ``as_of`` must be set) tests on every bar after ``as_of`` and
    cuts the bars at or before it into train and validation by the ratios of those two: the
    options are chosen, and every model trained, on what was known at ``as_of``.
    ``embargo_bars`` bars are dropped at each boundary so that targets looking ``horizon``
    bars ahead never straddle it.
    """

    split_ratios: SplitRatios = SplitRatios()
    split_mode: SplitMode = "per_code"
    embargo_bars: int = Field(default=12, ge=0)


class PortfolioTemplate(_Strict):
    """One portfolio template file; ``position_weights`` are units short per option."""

    name: str = Field(pattern=WEEKLY_CODE_RE.pattern)
    description: str
    selection_criteria: SelectionCriteria = SelectionCriteria()
    max_options: int = Field(ge=1, description="options per weekly code")
    position_weights: Literal["equal", "vega"] | list[float] = Field(
        default="equal", description="units short per option: 'equal', 'vega' or one per option"
    )
    hedge_option: HedgeOption | None = None
    training_params: TrainingParams = TrainingParams()
    time_series_params: TimeSeriesParams = TimeSeriesParams()

    @field_validator("position_weights", mode="before")
    @classmethod
    def _check_weights(cls, value: Any, info: ValidationInfo) -> Any:
        """One message per mistake, rather than pydantic's report against each union member."""
        if isinstance(value, str):
            if value not in ("equal", "vega"):
                raise ValueError(f"expected 'equal', 'vega' or a list of numbers, got {value!r}")
            return value
        if not isinstance(value, list) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in value
        ):
            raise ValueError(f"expected 'equal', 'vega' or a list of numbers, got {value!r}")
        # json.loads reads NaN and Infinity; a weight of either would be stored as it is.
        odd = [w for w in value if not math.isfinite(w)]
        if odd:
            raise ValueError(f"weights must be finite numbers, got {odd[0]}")
        negative = [w for w in value if w < 0]
        if negative:
            raise ValueError(
                f"weights are units short and must be non-negative, got {negative[0]:g}"
            )
        if not any(w > 0 for w in value):
            raise ValueError("at least one weight must be positive")
        max_options = info.data.get("max_options")
        if max_options is not None and len(value) != max_options:
            raise ValueError(
                f"{len(value)} weights given but max_options is {max_options}: "
                "give one weight per option"
            )
        return [float(w) for w in value]

    @field_validator("time_series_params")
    @classmethod
    def _embargo_covers_horizon(
        cls, value: TimeSeriesParams, info: ValidationInfo
    ) -> TimeSeriesParams:
        training = info.data.get("training_params")
        if training is not None and value.embargo_bars < training.horizon:
            raise ValueError(
                f"embargo_bars {value.embargo_bars} < training_params.horizon "
                f"{training.horizon}: targets would straddle the split boundaries"
            )
        return value


def with_split_mode(template: PortfolioTemplate, split_mode: str) -> PortfolioTemplate:
    """``template`` with another time split (the selection's run config may override it):
    the same books, backtested at an ``as_of`` for instance.

    Raises:
        TemplateError: ``split_mode`` is none of :data:`SplitMode`.
    """
    if split_mode not in get_args(SplitMode):
        raise TemplateError(
            f"split_mode {split_mode!r}: expected one of {', '.join(get_args(SplitMode))}"
        )
    params = template.time_series_params.model_copy(update={"split_mode": split_mode})
    return template.model_copy(update={"time_series_params": params})


@dataclass(frozen=True)
class TemplateFile:
    name: str
    path: Path
    origin: str  # 'packaged' or ENV_DIR


def template_files() -> dict[str, TemplateFile]:
    """Every template file by name; ``HEDGE_PORTFOLIO_DIR`` wins over a packaged name."""
    found = {
        p.stem: TemplateFile(p.stem, p, "packaged") for p in sorted(PACKAGED_DIR.glob("*.json"))
    }
    folder = Settings.from_env().portfolio_dir
    if folder is not None:
        if not folder.is_dir():
            raise TemplateError(f"{ENV_DIR}={folder}: not a directory")
        found |= {p.stem: TemplateFile(p.stem, p, ENV_DIR) for p in sorted(folder.glob("*.json"))}
    return dict(sorted(found.items()))


def find_template(name: str) -> TemplateFile:
    """The file of the template called ``name``; an unknown name lists the known ones."""
    files = template_files()
    if name not in files:
        known = ", ".join(files) or "none"
        raise TemplateError(f"unknown portfolio template {name!r}; known: {known}")
    return files[name]


def load_template(name: str = DEFAULT_TEMPLATE) -> PortfolioTemplate:
    """The validated template called ``name`` (raises ``TemplateError``)."""
    return load_template_file(find_template(name).path)


def load_template_file(path: Path) -> PortfolioTemplate:
    """Decoded as UTF-8 (a BOM, as some editors write, is allowed) whatever the locale, so a
    file that is not UTF-8 is a ``TemplateError`` naming it, not a bare ``UnicodeDecodeError``."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(
            f"{path}: not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}: not valid JSON: {exc}") from exc
    try:
        template = PortfolioTemplate.model_validate(data)
    except ValidationError as exc:
        raise TemplateError(_describe(path, exc)) from exc
    if template.name != path.stem:
        raise TemplateError(
            f"{path}: name: {template.name!r} does not match the file name {path.name!r}"
        )
    return template


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "(template)"
        if error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        elif error["type"] == "extra_forbidden":
            reason = f"unknown field (fields here: {_fields_at(error['loc'][:-1])})"
        elif error["type"] == "missing":
            reason = "required field is missing"
        else:
            reason = f"{error['msg']} (got {error['input']!r})"
        lines.append(f"{path}: {field}: {reason}")
    return "\n".join(lines)


def _fields_at(loc: tuple[int | str, ...]) -> str:
    """The fields of the (nested) model at ``loc``, to suggest the name a typo meant."""
    model: type[BaseModel] = PortfolioTemplate
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        model = next(
            a
            for a in (annotation, *get_args(annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        )
    return ", ".join(model.model_fields)
