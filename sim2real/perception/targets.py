"""Targets by name: which objects an encoder locates, its heads per object, keyed outputs.

An encoder trained with ``targets`` (``sim2real pretrain --targets mug,duck``; default: the
scene's ``role: target`` objects) has, on one shared backbone, per target ``NAME``:

* ``NAME/keypoint``: a one-point keypoint map (the object's centre in the image),
* ``NAME/position``: its centre in the robot-base frame (metres), or in the camera frame
  for a scene without a robot (``robot: null``; :func:`dataset_frame`),
* ``NAME/visibility``: its visible fraction (with ``visibility_weight > 0``),
* ``NAME/yaw``: ``cos, sin`` of ``symmetry * yaw`` when the object declares a symmetry
  (:mod:`sim2real.perception.orientation`).

The card's ``targets`` lists them: ``{NAME: {"frame", "symmetry", "yaw", "heads": {kind:
head name}}}``, ``target_names`` (their order) and ``target_layout: "named"``.
:meth:`Encoder.predict <sim2real.perception.encoder.Encoder.predict>` of such an encoder
returns outputs keyed by object name (:func:`by_object`). An encoder with the single-target
heads ``keypoint``, ``position``, ``visibility`` (every card written before targets, and a run
whose one target is the scene's default) keeps its flat outputs; :func:`card_targets`
describes it as one target (the card's ``targets`` since this version; for older cards the
visibility head's object, else ``cube``).

Example:
    >>> card = {"heads": {"position": {"type": "position"}}, "position_frame": "robot_base"}
    >>> card_targets(card)["cube"]["heads"], card_targets(card)["cube"]["frame"]
    ({'position': 'position'}, 'robot_base')
    >>> head_name("mug", "position"), split_head_name("mug/yaw")
    ('mug/position', ('mug', 'yaw'))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.errors import ConfigError, DataError
from sim2real.perception.orientation import symmetry_order, yaw_from_target
from sim2real.perception.scores import VISIBILITY_THRESHOLD

#: The outputs a target can have, in head order.
TARGET_KINDS = ("keypoint", "position", "visibility", "yaw")
#: The card's ``target_layout`` of an encoder with per-target heads.
NAMED_LAYOUT = "named"
#: The per-object dataset fields a named target is trained from (``objects.NAME.FIELD``).
OBJECT_FIELDS = ("present", "position", "uv", "visible_fraction", "quaternion")


def head_name(target: str, kind: str) -> str:
    """The head of ``target``'s ``kind`` output in a named layout: ``"NAME/kind"``."""
    return f"{target}/{kind}"


def split_head_name(name: str) -> tuple[str, str]:
    """Inverse of :func:`head_name`; ``("", name)`` for a single-target head name."""
    target, _, kind = name.rpartition("/")
    return target, kind


@dataclass(frozen=True)
class Target:
    """One object an encoder is trained to locate.

    Attributes:
        name: the object's instance name in the scene (``mug``, ``clutter_0``, ``cube``).
        symmetry: the object spec's ``symmetry`` (``none``, ``z2``, ``z4``, ``z``, ``full``,
            an integer, or ``None`` when the spec declares none).
        fields: dataset field per label (``position``, ``uv``, ``visible_fraction``,
            ``quaternion``, ``present``), ``None`` where the dataset has none.
        frame: the frame of the positions (``robot_base``, or ``camera`` for a scene
            without a robot).
    """

    name: str
    symmetry: str | int | None
    fields: Mapping[str, str | None]
    frame: str = "robot_base"

    @property
    def order(self) -> int | None:
        """The symmetry's order (:func:`~sim2real.perception.orientation.symmetry_order`)."""
        return symmetry_order(self.symmetry)

    @property
    def has_yaw_labels(self) -> bool:
        """Whether a yaw can be trained: a declared symmetry with a yaw, and quaternions."""
        return self.order is not None and self.fields.get("quaternion") is not None


def dataset_frame(manifest: Mapping[str, Any]) -> str:
    """The frame of a dataset's position labels: ``camera`` (OpenCV camera frame) when its
    scene has no robot (``robot: null``), else ``robot_base``.

    Example:
        >>> dataset_frame({"spec": {"scene": {"robot": None}}})
        'camera'
        >>> dataset_frame({"spec": {"scene": {"robot": {"name": "panda"}}}})
        'robot_base'
    """
    scene = manifest.get("spec", {}).get("scene", {}) or {}
    return "camera" if "robot" in scene and scene["robot"] is None else "robot_base"


def scene_objects(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"name", "role", "symmetry"}]`` per object instance of a dataset's scene.

    A scene with ``objects:`` lists every instance (``clutter_0``...); a legacy scene with a
    ``cube:`` section is the one target ``cube`` (symmetry ``z4``).

    Example:
        >>> scene_objects({"spec": {"scene": {"cube": {"size": 0.05}}}})
        [{'name': 'cube', 'role': 'target', 'symmetry': 'z4'}]
    """
    scene = manifest.get("spec", {}).get("scene", {}) or {}
    entries = scene.get("objects")
    if not entries:
        return [{"name": "cube", "role": "target", "symmetry": "z4"}]
    from sim2real.envs.objects.specs import ObjectSpec  # pybullet-free, but envs: lazily

    out = []
    for entry in entries:
        spec = entry if isinstance(entry, ObjectSpec) else ObjectSpec.model_validate(entry)
        for name in spec.instance_names:
            out.append({"name": name, "role": spec.role, "symmetry": spec.symmetry})
    return out


def resolve_targets(
    manifest: Mapping[str, Any], available: Mapping[str, Any], requested: Sequence[str] | None
) -> list[Target]:
    """The targets of a pretraining run on a dataset.

    Args:
        manifest: the dataset's manifest (its scene names the objects).
        available: the dataset's fields.
        requested: instance names; ``None``: the scene's ``role: target`` instances.

    Raises:
        ConfigError: a requested name is not an object of the scene (the known ones listed).
        DataError: the dataset has no labels for a target (neither ``objects.NAME.position``
            nor, for the legacy cube, ``position``).

    Example:
        >>> m = {"spec": {"scene": {"cube": {}}}}
        >>> [t.name for t in resolve_targets(m, {"position": {}, "uv": {}}, None)]
        ['cube']
        >>> resolve_targets(m, {}, ["duck"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sim2real.errors.ConfigError: targets: 'duck' is not an object of the ..., expected ...
    """
    objects = scene_objects(manifest)
    by_name = {o["name"]: o for o in objects}
    names = list(requested) if requested else [o["name"] for o in objects if o["role"] == "target"]
    for name in names:
        if name not in by_name:
            raise ConfigError(
                f"targets: {name!r} is not an object of the dataset's scene, expected some "
                f"of {sorted(by_name)}"
            )
    legacy = not manifest.get("spec", {}).get("scene", {}).get("objects")
    out = []
    for name in names:
        key = f"objects.{name}."
        if key + "position" in available:
            fields = {f: (key + f if key + f in available else None) for f in OBJECT_FIELDS}
        elif legacy and "position" in available:  # the legacy single cube: top-level labels
            fields = {"position": "position", "uv": "uv", "visible_fraction": None}
            fields.update({"quaternion": None, "present": None})
            for extra in ("visible_pixels", "box"):  # what the visibility estimate reads
                fields[extra] = extra if extra in available else None
        else:
            raise DataError(
                f"targets: the dataset has no labels for {name!r} (no {key + 'position'!r}): "
                "generate it again with this version, which writes objects.NAME.* fields"
            )
        out.append(Target(name, by_name[name]["symmetry"], fields, dataset_frame(manifest)))
    return out


def is_named(card: Mapping[str, Any]) -> bool:
    """Whether an encoder card has per-target heads (``target_layout: named``)."""
    return card.get("target_layout") == NAMED_LAYOUT


def target_head_specs(
    targets: Sequence[Target], head: str, *, window: int, pool: str, visibility: bool, yaw: bool
) -> dict[str, dict[str, Any]]:
    """Head specs of a named layout (for :class:`~sim2real.perception.encoder.Encoder`).

    Args:
        targets: the targets.
        head: ``position``, ``keypoint`` or ``keypoint+position`` (PretrainConfig ``head``).
        window: the keypoint heads' eval-time window.
        pool: the position heads' pooling.
        visibility: add visibility heads.
        yaw: add yaw heads for targets with :attr:`Target.has_yaw_labels`.
    """
    specs: dict[str, dict[str, Any]] = {}
    for t in targets:
        if "keypoint" in head:
            specs[head_name(t.name, "keypoint")] = {
                "type": "keypoints", "names": [t.name], "hidden": 64, "window": window,
            }  # fmt: skip
        if "position" in head:
            spec: dict[str, Any] = {"type": "position", "frame": t.frame}
            if pool != "mean":
                spec["pool"] = pool
            specs[head_name(t.name, "position")] = spec
        if visibility:
            specs[head_name(t.name, "visibility")] = {"type": "visibility", "object": t.name}
        if yaw and t.has_yaw_labels:
            specs[head_name(t.name, "yaw")] = {"type": "yaw", "symmetry": t.order, "object": t.name}
    return specs


def targets_card(targets: Sequence[Target], heads: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``targets`` for a named layout with ``heads`` (names -> specs)."""
    out = {}
    for t in targets:
        kinds = {k: head_name(t.name, k) for k in TARGET_KINDS if head_name(t.name, k) in heads}
        out[t.name] = {
            "frame": t.frame,
            "symmetry": t.symmetry,
            "order": t.order,
            "yaw": "yaw" in kinds,
            "heads": kinds,
        }
    return out


def single_target_card(manifest: Mapping[str, Any], heads: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``targets`` of a single-target encoder (heads ``keypoint``, ``position``,
    ``visibility``): the scene's first ``role: target`` object (its visibility head's object
    when it has one).

    Example:
        >>> single_target_card({"spec": {"scene": {"cube": {}}}}, {"position": {}})["cube"]["heads"]
        {'position': 'position'}
    """
    objects = scene_objects(manifest)
    first = next((o for o in objects if o["role"] == "target"), objects[0])
    name = str(heads.get("visibility", {}).get("object", first["name"]))
    symmetry = next((o["symmetry"] for o in objects if o["name"] == name), None)
    kinds = {k: k for k in ("keypoint", "position", "visibility") if k in heads}
    frame = heads.get("position", {}).get("frame", "robot_base")
    return {
        name: {
            "frame": frame, "symmetry": symmetry, "order": None, "yaw": False, "heads": kinds,
        }
    }  # fmt: skip


def card_targets(card: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets an encoder card describes (see the module docstring); a single-target card
    without ``targets`` is one target named after its visibility head's object, else ``cube``."""
    if card.get("targets"):
        order = card.get("target_names") or sorted(card["targets"])  # JSON sorts the keys
        return {k: dict(card["targets"][k]) for k in order}
    heads = card.get("heads", {})
    kinds = {k: k for k in ("keypoint", "position", "visibility") if k in heads}
    name = str(heads.get("visibility", {}).get("object", "cube"))
    return {
        name: {
            "frame": card.get("position_frame"),
            "symmetry": None,
            "order": None,
            "yaw": False,
            "heads": kinds,
        }
    }


def by_object(card: Mapping[str, Any], flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A named encoder's flat head outputs -> ``{NAME: {output: (N, ...) array}}``.

    Per object: ``position`` (N, 3) metres; ``keypoint`` (N, 2) normalised whole-frame
    coordinates and ``keypoint_px`` (N, 2) pixels; ``visibility`` (N,) the visible fraction
    and ``visible`` (N,) bool; ``yaw_cos_sin`` (N, 2), ``yaw`` (N,) radians in
    ``[-pi / s, pi / s]`` and ``yaw_deg``. Only the outputs the encoder has.

    Example:
        >>> card = {"targets": {"mug": {"heads": {"visibility": "mug/visibility"}}}}
        >>> out = by_object(card, {"mug/visibility": np.array([3.0, -3.0])})
        >>> out["mug"]["visible"].tolist()
        [True, False]
    """
    out: dict[str, Any] = {}
    for name, spec in card_targets(card).items():
        mine: dict[str, np.ndarray] = {}
        heads = spec.get("heads", {})
        if "position" in heads:
            mine["position"] = flat[heads["position"]]
        if "keypoint" in heads:
            mine["keypoint"] = flat[heads["keypoint"]][:, 0]
            mine["keypoint_px"] = flat[heads["keypoint"] + "_px"][:, 0]
        if "visibility" in heads:
            fraction = 1.0 / (1.0 + np.exp(-flat[heads["visibility"]].astype(np.float64)))
            mine["visibility"] = fraction.astype(np.float32)
            mine["visible"] = fraction >= VISIBILITY_THRESHOLD
        if "yaw" in heads:
            cos_sin = flat[heads["yaw"]]
            order = int(spec["order"])
            yaw = yaw_from_target(cos_sin[:, 0], cos_sin[:, 1], order)
            mine.update(yaw_cos_sin=cos_sin, yaw=yaw.astype(np.float32))
            mine["yaw_deg"] = np.degrees(yaw).astype(np.float32)
        out[name] = mine
    return out


def check_targets(encoder_targets: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """``wanted`` (default: all of ``encoder_targets``), each checked to be one of them.

    Raises:
        ConfigError: a name the encoder does not locate (its targets listed).
    """
    if not wanted:
        return list(encoder_targets)
    unknown = [w for w in wanted if w not in encoder_targets]
    if unknown:
        raise ConfigError(
            f"objects {unknown}: the encoder locates {list(encoder_targets)}, expected some of them"
        )
    return list(wanted)
