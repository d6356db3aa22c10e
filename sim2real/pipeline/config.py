"""The typed configuration of a pipeline (``configs/pipelines/NAME.yaml``).

A YAML file fills :class:`PipelineConfig`; its optional ``tiny:`` mapping holds dotted
overrides that shrink every stage (``--tiny``, for CI smoke runs); command-line overrides are
dotted ``key=value`` pairs whose values are parsed as YAML (``pretrain.epochs=3``,
``adapt.curve.ks=[0,2,all]``, ``real=null``). Unknown keys and bad values raise
:class:`~sim2real.errors.ConfigError` naming the dotted key, the value and what is allowed.

Example:
    >>> cfg = load_config("demo", overrides=["pretrain.epochs=2"], tiny=True)
    >>> cfg.pretrain.epochs
    2
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from sim2real.errors import ConfigError
from sim2real.paths import preset_path
from sim2real.perception.train_config import PretrainConfig
from sim2real.settings import nested_validation
from sim2real.transfer.config import CurveConfig, FinetuneConfig

if TYPE_CHECKING:
    from sim2real.policies.config import TrainConfig

Randomization = str | dict[str, Any]


class Section(BaseModel):
    """Base of every section: frozen, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(Section):
    """Stage ``data``: the labelled simulated dataset."""

    randomization: Randomization = "default"
    n: int = Field(3000, ge=1, description="number of rendered frames")
    workers: int = Field(2, ge=1)
    shard_size: int = Field(256, ge=1)
    seed: int = Field(0, ge=0)
    grid: int = Field(16, ge=1, description="frames in the sample grid")
    reach_poses: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of frames with the gripper posed near the cube"
    )


class TargetSection(Section):
    """Stage ``target``: the held-out "real" domain (or the user's real frames).

    Without ``real``, frames are rendered with ``randomization`` (a setting never used in
    training) and written as a real-frame folder: ``labelled/`` (adaptation), ``test/``
    (scoring only) and ``unlabelled/``. With ``real``, its ``labelled`` frames are split into
    adaptation and test frames by ``test_fraction`` (symbolic links, nothing is copied).
    """

    scene: str | None = Field(
        None, description="scene preset or YAML of the target (None: the pipeline's scene)"
    )
    randomization: Randomization = "strong"
    labelled: int = Field(12, ge=2, description="labelled frames for adaptation")
    test: int = Field(40, ge=1, description="labelled frames kept for scoring")
    unlabelled: int = Field(40, ge=0)
    seed: int = Field(1_000_003, ge=0, description="never the data seed")
    test_fraction: float = Field(0.34, gt=0.0, lt=1.0, description="real frames: test split")


class PretrainSection(PretrainConfig):
    """Stage ``pretrain``: the :class:`~sim2real.perception.train_config.PretrainConfig`
    fields (every pretraining setting, declared there once), with smaller defaults.

    ``data`` (the ``data`` stage's dataset) and ``seed`` (the pipeline's) are set by the
    pipeline, not here.
    """

    data: str | None = Field(None, exclude=True, description="set by the pipeline")
    seed: int = Field(0, exclude=True, description="set by the pipeline (top-level seed)")
    epochs: int = Field(5, ge=1, description="passes over the training split")
    batch_size: int = Field(32, ge=1, description="images per step (per process)")

    @model_validator(mode="before")
    @classmethod
    def _set_by_the_pipeline(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, where in (("data", "the data stage's dataset"), ("seed", "top-level seed")):
                if key in data:
                    raise ConfigError(
                        f"{key}={data[key]!r}: expected no {key} in this section (the pipeline "
                        f"uses {where})"
                    )
        return data

    def config(self, data: str | Path, seed: int) -> PretrainConfig:
        """The :class:`PretrainConfig` of the stage: these settings on ``data`` with ``seed``."""
        return PretrainConfig(**self.model_dump(), data=str(data), seed=seed)


def _given(settings: FinetuneConfig) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude_unset=True)


#: Fine-tuning settings in a section: validated as :class:`FinetuneConfig`, written (the
#: fingerprint, ``config.yaml``) as the keys the YAML gave, so the stage's defaults (the
#: pipeline's seed and device) still apply to the rest when a saved config is run again.
GivenFinetuneConfig = Annotated[FinetuneConfig, PlainSerializer(_given)]


class CurveSection(CurveConfig):
    """The k-shot transfer curve inside stage ``adapt`` (:func:`run_curve`): the
    :class:`~sim2real.transfer.config.CurveConfig` fields with smaller defaults (``seed`` is
    the pipeline's), ``enabled`` and the runs' fine-tuning ``settings``."""

    enabled: bool = True
    ks: list[int | str] = Field(default_factory=lambda: [0, 2, 4, "all"])
    repeats: int = Field(1, ge=1)
    strategies: list[str] = Field(default_factory=lambda: ["probe", "adabn", "adabn+top-k"])
    baselines: bool = False
    outer_folds: int = Field(3, ge=0)
    seed: int = Field(0, exclude=True, description="set by the pipeline (top-level seed)")
    settings: GivenFinetuneConfig = Field(
        default_factory=FinetuneConfig, description="fine-tuning settings of every run"
    )

    @model_validator(mode="before")
    @classmethod
    def _set_by_the_pipeline(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            raise ConfigError(
                f"seed={data['seed']!r}: expected no seed in this section (the pipeline uses "
                "its top-level seed)"
            )
        return data

    def config(self, seed: int) -> CurveConfig:
        """The :class:`CurveConfig` of the stage, with the pipeline's ``seed``."""
        return CurveConfig(**self.model_dump(exclude={"enabled", "settings"}), seed=seed)


class AdaptSection(Section):
    """Stage ``adapt``: :func:`sim2real.transfer.finetune_cli` on the target frames.

    ``settings`` (and ``curve.settings``) are :class:`~sim2real.transfer.config.FinetuneConfig`
    fields; ``seed``, ``device`` and ``progress`` default to the pipeline's.
    """

    strategy: str = "adabn+top-k"
    settings: GivenFinetuneConfig = Field(
        default_factory=FinetuneConfig, description="fine-tuning settings"
    )
    curve: CurveSection = CurveSection()


class EvaluateSection(Section):
    """Stage ``evaluate``: sim-only vs adapted encoder on the target's test frames."""

    route: str | None = Field(None, description="position_head | keypoint_plane | card's")
    bins: int = Field(20, ge=2)


class PolicySection(Section):
    """Stage ``policy``: :func:`sim2real.policies.train.train` on the shared encoder."""

    enabled: bool = True
    env_id: str = "Sim2Real/ReachCube-v0"
    encoder: Literal["adapted", "pretrained"] = "adapted"
    algo: Literal["ppo", "sac"] = "ppo"
    mode: Literal["frozen", "finetune"] = "frozen"
    steps: int = Field(20_000, ge=1)
    n_envs: int = Field(2, ge=1)
    randomization: Randomization | None = Field(None, description="None: data.randomization")
    settings: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields")

    def train_config(self, encoder: str, **shared: Any) -> TrainConfig:
        """The stage's :class:`~sim2real.policies.config.TrainConfig` (the model ``sim2real
        train`` reads too): this section's fields, the pipeline's ``shared`` settings, then
        ``settings`` (any other TrainConfig field).

        Example:
            >>> PolicySection(steps=64).train_config("enc", seed=1).steps
            64
        """
        from sim2real.policies.config import make_config

        own = {"env_id": self.env_id, "encoder": encoder, "algo": self.algo, "mode": self.mode}
        own |= {"steps": self.steps, "n_envs": self.n_envs}
        return make_config(**{**own, **shared, **self.settings})


#: ``policy.settings`` keys that only concern a pretrained encoder: the ``scratch`` stage drops
#: them (its CNN has no position route to feed, no frozen features to cache), keeping the
#: library's defaults for a from-scratch encoder (e.g. a trunk of 256 features).
ENCODER_ONLY = ("use_position", "cache_features", "trunk_dim", "encoder_lr_scale", "aux_loss")


class ScratchSection(Section):
    """Stage ``scratch``: the ``policy`` stage's training again (same env, algorithm, steps,
    envs and ``policy.settings`` but :data:`ENCODER_ONLY`), on a randomly initialised CNN
    trained end to end, then the same closed loop as stage ``run``: what the pretrained and
    adapted encoder is worth at the same budget.

    Example:
        >>> ScratchSection(enabled=True).train_config(PolicySection(steps=64), seed=1).mode
        'scratch'
    """

    enabled: bool = False
    backbone: str = Field("nature_cnn", description="the from-scratch CNN (TrainConfig.backbone)")
    pool: Literal["mean", "flatten"] = Field("flatten", description="flatten: as SB3's NatureCNN")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields replacing policy.settings' ones"
    )

    def train_config(self, policy: PolicySection, **shared: Any) -> TrainConfig:
        """The :class:`~sim2real.policies.config.TrainConfig` of the baseline."""
        from sim2real.policies.config import make_config

        kept = {k: v for k, v in policy.settings.items() if k not in ENCODER_ONLY}
        own = {"env_id": policy.env_id, "encoder": None, "algo": policy.algo, "mode": "scratch"}
        own |= {"steps": policy.steps, "n_envs": policy.n_envs}
        own |= {"backbone": self.backbone, "pool": self.pool}
        return make_config(**{**own, **shared, **kept, **self.settings})


class ExportSection(Section):
    """Stage ``export``: the bundle as ONNX and/or TorchScript."""

    enabled: bool = True
    formats: list[Literal["onnx", "torchscript"]] = Field(default_factory=lambda: ["onnx"])
    parity_frames: int = Field(8, ge=1, description="frames compared with the torch policy")


class RunSection(Section):
    """Stage ``run``: the bundle through :class:`~sim2real.deploy.Runner` on a SimRobot."""

    enabled: bool = True
    hz: float = Field(20.0, gt=0.0)
    steps: int = Field(300, ge=1, description="closed-loop ticks (SimRobot camera)")
    episodes: int = Field(
        20,
        ge=0,
        description="closed-loop episodes scored: the loop runs max(steps, episodes x the env's "
        "step limit) ticks and scores the first `episodes` that finish (0: every one in `steps`)",
    )
    replay_steps: int = Field(60, ge=0, description="ticks on replayed target frames")
    max_delta: float | None = Field(None, gt=0.0)
    randomization: Randomization | None = Field(None, description="None: target domain")
    watchdog_s: float = Field(2.0, gt=0.0)


class ReportSection(Section):
    """Stage ``report``: ``report.md`` with pictures."""

    title: str = "sim2real pipeline"
    #: the time budget the stages were sized for (``sim2real demo --minutes``), in the report
    budget_minutes: float | None = Field(None, gt=0)


class PipelineConfig(Section):
    """A whole pipeline: shared settings, then one section per stage."""

    name: str = "pipeline"
    scene: str = "tabletop_panda"
    image_size: tuple[int, int] = Field((64, 64), description="(W, H) of sim frames")
    real: str | None = Field(None, description="folder of real frames (labelled/, unlabelled/)")
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    threads: int | None = Field(1, ge=1, description="torch threads; None: torch's default")
    data: DataSection = DataSection()
    target: TargetSection = TargetSection()
    pretrain: PretrainSection = PretrainSection()
    adapt: AdaptSection = AdaptSection()
    evaluate: EvaluateSection = EvaluateSection()
    policy: PolicySection = PolicySection()
    scratch: ScratchSection = ScratchSection()
    export: ExportSection = ExportSection()
    run: RunSection = RunSection()
    report: ReportSection = ReportSection()

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, str):
            from sim2real.envs.core import image_size_tuple

            return image_size_tuple(value)
        return value

    @model_validator(mode="after")
    def _one_scene(self) -> PipelineConfig:
        check_policy_scene(self.scene, self.policy)
        return self

    def section(self, name: str) -> dict[str, Any]:
        """JSON form of one section (or of the shared settings for ``"shared"``)."""
        if name == "shared":
            return self.model_dump(mode="json", include=set(SHARED))
        data = getattr(self, name).model_dump(mode="json")
        if name == "scratch":  # the policy fields it trains with, not the encoder-only ones
            policy = self.policy.model_dump(mode="json")
            policy["settings"] = {
                k: v for k, v in policy["settings"].items() if k not in ENCODER_ONLY
            }
            data["policy"] = {k: v for k, v in policy.items() if k != "encoder"}
        return data


def check_policy_scene(scene: str, policy: PolicySection) -> None:
    """The policy must train on the scene the data comes from: ``policy.env_id``'s own scene
    (``policy.settings.scene`` when given) must be ``scene``, else a ConfigError says how to
    fix it (an env id on that scene, or ``Sim2Real/Reach-v0`` with ``settings.scene``).

    Example:
        >>> check_policy_scene("kuka_cube", PolicySection(env_id="Sim2Real/KukaCubeReach-v0"))
    """
    if not policy.enabled:
        return
    from sim2real.envs import ENV_IDS

    own = policy.settings.get("scene") or ENV_IDS.get(policy.env_id, {}).get("scene")
    if own is None or _same_scene(own, scene):
        return
    raise ConfigError(
        f"policy.env_id {policy.env_id!r} trains on scene {own!r}, but the pipeline's scene "
        f"(data, pretraining) is {scene!r}: set policy.env_id to an env on {scene!r}, or "
        f"policy.env_id: Sim2Real/Reach-v0 with policy.settings: {{scene: {scene}}}"
    )


def _same_scene(a: str, b: str) -> bool:
    try:
        return preset_path("scenes", a).resolve() == preset_path("scenes", b).resolve()
    except ConfigError:
        return a == b


#: Top-level settings every stage may read (part of every fingerprint that uses them).
SHARED = ("scene", "image_size", "real", "seed", "device")


def load_config(
    path: str | Path,
    overrides: list[str] | dict[str, Any] | None = None,
    tiny: bool = False,
) -> PipelineConfig:
    """Read a pipeline YAML (or preset name), apply ``tiny`` and dotted overrides, validate.

    Args:
        path: a YAML path or a preset name in ``configs/pipelines/``.
        overrides: ``["pretrain.epochs=3", ...]`` (values parsed as YAML) or
            ``{"pretrain.epochs": 3}``; applied after the ``tiny`` overrides.
        tiny: apply the file's ``tiny:`` overrides (shrinks every stage).

    Raises:
        ConfigError: missing file, bad YAML, an unknown key or a bad value (named).

    Example:
        >>> load_config("demo", ["policy.steps=5000"]).policy.steps
        5000
    """
    file = preset_path("pipelines", path)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top, got {type(data).__name__}")
    tiny_overrides = data.pop("tiny", None) or {}
    if not isinstance(tiny_overrides, dict):
        raise ConfigError(f"{file}: 'tiny' must map dotted keys to values")
    if tiny:
        data = apply_overrides(data, tiny_overrides, f"{file} (tiny)")
    data = apply_overrides(data, parse_overrides(overrides), "--set")
    return validate(data, str(file))


def validate(data: dict[str, Any], where: str) -> PipelineConfig:
    """Build a :class:`PipelineConfig`; the error names every bad dotted key and value."""
    try:
        with nested_validation():  # the sections' errors keep their dotted keys
            return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        by_key: dict[str, list[str]] = {}
        got: dict[str, str] = {}
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
            by_key.setdefault(key, []).append(err["msg"].removeprefix("Value error, "))
            if err["type"] not in ("extra_forbidden", "value_error"):  # a ConfigError names it
                got[key] = f" (got {err.get('input')!r})"
        problems = [f"{k}: {' or '.join(msgs)}{got.get(k, '')}" for k, msgs in by_key.items()]
        raise ConfigError(f"{where}: invalid pipeline config:\n  " + "\n  ".join(problems)) from exc


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["a.b=1"]`` -> ``{"a.b": 1}`` (values parsed as YAML); dicts pass through.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a copy of ``data`` with each dotted key set (intermediate mappings created).

    Raises:
        ConfigError: a key whose parent is not a mapping, or a top-level key unknown to
            :class:`PipelineConfig` (named with the allowed keys).
    """
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] not in PipelineConfig.model_fields:
            allowed = sorted(PipelineConfig.model_fields)
            raise ConfigError(f"{where}: unknown key {dotted!r}: expected one of {allowed}")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                at = ".".join(parts[: i + 1])
                raise ConfigError(f"{where}: {dotted!r}: {at!r} is {child!r}, not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _is_union_tag(part: Any) -> bool:
    """Pydantic inserts the union member's type name into ``loc``; hide it from users."""
    return isinstance(part, str) and (
        part in ("str", "int", "dict[str,any]", "float", "bool", "none") or "[" in part
    )
