"""Which perception error governs the policy's success (a paragraph of the report).

The policy acts on one position route of the encoder (the bundle's contract names it); the
report puts that route's error on the target's test frames beside the task's success radius.
"""

from __future__ import annotations

from typing import Any


def governing_error(results: dict[str, Any]) -> str:
    """Which perception error bounds the policy's success, against the task's radius.

    >>> results = {"pretrain": {"metrics": {"position_route": "keypoint_plane"}},
    ...            "evaluate": {"stats": {"adapted": {"route": "keypoint_plane",
    ...                                               "xy_cm": {"mean": 9.0}}}},
    ...            "run": {"success_radius_m": 0.03}}
    >>> governing_error(results).split(":")[0]
    'Which error governs success'
    """
    metrics = flatten(results["pretrain"].get("metrics") or {})
    route = (results.get("policy") or {}).get("position_route") or metrics.get("position_route")
    radius_m = (results.get("run") or results.get("scratch") or {}).get("success_radius_m")
    radius = f"{radius_m * 100:.0f} cm" if radius_m else "the task's threshold"
    stats = results["evaluate"]["stats"]
    adapted = stats.get("adapted") or next(iter(stats.values()))
    test = f"{adapted['xy_cm']['mean']:.2f} cm ({adapted['route']})"
    head = (
        f"Which error governs success: the policy acts on the encoder's `{route}` position and "
        f"succeeds with the gripper within {radius} of the goal."
    )
    if route == "keypoint_relative":
        near = metrics.get("sim_val.keypoint_relative.near_xy_cm_mean")
        near_text = f" (simulated validation, gripper within 10 cm: {near:.2f} cm)" if near else ""
        return (
            f"{head} That route places the cube relative to the gripper, so its error near the "
            f"goal{near_text} governs success, not the absolute error on the target's test "
            f"frames ({test}): a camera pose error moves both keypoints alike and cancels in "
            "their difference, and test frames without the gripper's position cannot score the "
            "relative route.\n"
        )
    bound = ""
    if radius_m:
        ratio = adapted["xy_cm"]["mean"] / (radius_m * 100)
        bound = (
            f" It is {ratio:.1f}x the radius: perception limits success (a policy acting on an "
            "estimate this far off reaches the radius only where the error happens to be "
            "small); the training-domain rate above shows the RL budget's own limit"
            if ratio > 1 else f" It is {ratio:.1f}x the radius: perception allows success; "
            "the training-domain rate above shows what the RL budget reaches"
        )  # fmt: skip
    return (
        f"{head} With an absolute route the error on the target's test frames, {test} for the "
        f"adapted encoder, governs success.{bound} (more data and pretraining: `--set "
        "data.n=... --set pretrain.epochs=...`; longer RL: `--set policy.steps=...`).\n"
    )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (numbers and strings only)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out
