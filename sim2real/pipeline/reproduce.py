"""The report's "Reproduce" section: the ``sim2real`` subcommands equivalent to each stage."""

from __future__ import annotations

from typing import Any


def reproduce_section(cfg: Any, results: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report's "Reproduce" section: the command, then the stages one by one."""
    command = meta.get("command") or f"sim2real pipeline configs/pipelines/{cfg.name}.yaml"
    steps = "\n".join(stage_commands(cfg, results, meta.get("out", "OUT")))
    return (
        "## Reproduce\n\nThe whole pipeline (finished stages are skipped; `--from STAGE` "
        f"forces one and those after it):\n\n```bash\n{command}\n```\n\n"
        "The resolved configuration is `config.yaml` in the output folder; each stage's "
        "fingerprint, outputs and result are in `STAGE/.stage.json`. The stages one by one "
        "(main flags; the fine-tuning and training settings are in `config.yaml`):\n\n"
        f"```bash\n{steps}\n```\n"
    )


def stage_commands(cfg: Any, results: dict[str, Any], out: str) -> list[str]:
    """The ``sim2real`` subcommands equivalent to each stage that ran (main flags)."""
    w, h = cfg.image_size
    rand = cfg.data.randomization if isinstance(cfg.data.randomization, str) else "CUSTOM.yaml"
    target = results["target"]
    unl = target.get("unlabelled")
    unl_flag = ""
    if unl:
        unl_flag = f" --unlabelled {unl if unl.startswith('/') else f'{out}/{unl}'}"
    minutes = f" --minutes {cfg.pretrain.max_minutes:g}" if cfg.pretrain.max_minutes else ""
    p, a = cfg.pretrain, cfg.adapt
    lines = [
        f"sim2real generate --scene {cfg.scene} --randomization {rand} --n {cfg.data.n} "
        f"--out {out}/data/sim --workers {cfg.data.workers} --size {w}x{h} --seed {cfg.data.seed}",
        f"sim2real pretrain --data {out}/data/sim --out {out}/pretrain/encoder --backbone "
        f"{p.backbone} --head {p.head} --epochs {p.epochs} --batch-size {p.batch_size} "
        f"--lr {p.lr:g} --seed {cfg.seed}{minutes}",
        f"sim2real finetune --model {out}/pretrain/encoder --real {out}/{target['labelled']}"
        f"{unl_flag} --strategy {a.strategy} --out {out}/adapt/encoder",
    ]
    if a.curve.enabled:
        ks = ",".join(str(k) for k in a.curve.ks)
        lines.append(
            f"sim2real curve --model {out}/pretrain/encoder --real {out}/{target['labelled']}"
            f"{unl_flag} --out {out}/adapt/curve --ks {ks} --repeats {a.curve.repeats} "
            f"--strategies {','.join(a.curve.strategies)}"
        )
    for name in ("pretrain", "adapt"):
        lines.append(
            f"sim2real evaluate --model {out}/{name}/encoder --real {out}/{target['test']} "
            f"--out {out}/evaluate/{'sim-only' if name == 'pretrain' else 'adapted'}"
        )
    if "policy" in results:
        pol = cfg.policy
        encoder = f"{out}/{'adapt' if pol.encoder == 'adapted' else 'pretrain'}/encoder"
        lines.append(
            f"sim2real train --env {pol.env_id} --encoder {encoder} --out {out}/policy/run "
            f"--algo {pol.algo} --steps {pol.steps} --n-envs {pol.n_envs} --mode {pol.mode} "
            f"--seed {cfg.seed}"
        )
    if "scratch" in results:
        pol, sc = cfg.policy, cfg.scratch
        lines.append(
            f"sim2real train --env {pol.env_id} --out {out}/scratch/run --algo {pol.algo} "
            f"--steps {pol.steps} --n-envs {pol.n_envs} --mode scratch --seed {cfg.seed} "
            f"--set backbone={sc.backbone} --set pool={sc.pool}"
        )
    for f in (results.get("export") or {}).get("files", []):
        lines.append(
            f"sim2real export --bundle {out}/policy/run --format {f['format']} "
            f"--out {out}/{f['file']}"
        )
    if "run" in results:
        lines.append(
            f"sim2real run --bundle {out}/policy/run --camera sim --robot sim --hz {cfg.run.hz:g} "
            f"--steps {cfg.run.steps}  # randomisation 'none'; the pipeline used "
            f"{results['run']['robot']}"
        )
    return lines
