"""Where ``ocformer train`` takes a run's options from, other than its flags: the
checkpoint directory of ``--resume``, or the policy table of ``--policy-table``.

    ocformer train --resume runs/ckpt
    ocformer train --policy-table runs/order.table --data order --seed 7

``problem_flags`` maps each flag that defines the problem (``"--layers"``, ...) to
its value, None where it was not given; either source refuses the flags it fixes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocformer.config import TrainConfig, merge
from ocformer.errors import DataError, OcformerError

if TYPE_CHECKING:
    from ocformer.config import ExecutionConfig
    from ocformer.data import Dataset
    from ocformer.policy import PolicyTable


def resumed_run(
    resume: Path, checkpoint: Path | None, problem_flags: dict[str, Any]
) -> tuple[TrainConfig, Dataset, dict[str, Any], Path | None]:
    """The configuration, dataset, execution options and ``--out`` stored in the
    checkpoint directory ``resume``.

    Raises:
        OcformerError: if a flag that defines the problem is given too, or the
            directory holds no checkpoint that the command line can restart.
    """
    from ocformer.checkpoint import STATE_FILE, read_state
    from ocformer.data import load_dataset

    if checkpoint is not None and checkpoint.resolve() != resume.resolve():
        raise OcformerError(
            f"`--resume` continues the checkpoint in {str(resume)!r}, got "
            f"--checkpoint {str(checkpoint)!r} too; drop --checkpoint."
        )
    given = [name for name, value in problem_flags.items() if value is not None]
    if given:
        raise OcformerError(
            f"`--resume` takes the run's options from {str(resume)!r}, got {given[0]} "
            "too; drop it (with --resume only --workers, --backend, --address, --out, "
            "--json and --force apply)."
        )

    state = read_state(resume)
    if state is None:
        raise DataError(
            f"`--resume` found no {STATE_FILE} in {str(resume)!r}; pass the directory "
            "that --checkpoint was given."
        )
    recipe, notes = state.get("recipe") or {}, state.get("notes") or {}
    recipe_data = recipe.get("data")
    if not recipe_data or "config" not in recipe:
        raise DataError(
            f"checkpoint {str(resume)!r} does not say how to rebuild its dataset (it "
            "was written from Python); resume it by calling ocformer.train with the "
            "same dataset, configuration and checkpoint."
        )

    settings = TrainConfig.from_dict(recipe["config"], str(resume / STATE_FILE))
    dataset = load_dataset(
        recipe_data["name"],
        seed=recipe_data["seed"],
        n_sequences=recipe_data["n_sequences"],
    )
    out = notes.get("out")
    return settings, dataset, notes.get("execution") or {}, Path(out) if out else None


def table_run(
    path: Path,
    problem_flags: dict[str, Any],
    execution: ExecutionConfig,
    *,
    resume: Path | None,
    dry_run: bool,
) -> tuple[TrainConfig, Dataset, PolicyTable]:
    """The configuration, dataset and table of a run that looks its plan up in
    the policy table ``path``.

    Raises:
        OcformerError: if a flag that the table fixes is given too, or the file is
            not a policy table with a training configuration.
    """
    from ocformer.data import load_dataset
    from ocformer.policy import load_policy_table

    if resume is not None or dry_run:
        given = "--resume" if resume is not None else "--dry-run"
        raise OcformerError(
            f"`--policy-table` looks the plan up instead of solving, got {given} "
            f"too; drop {given} or --policy-table."
        )
    free = {"--data", "--n-sequences", "--seed", "--test-fraction"}
    given = [
        name
        for name, value in problem_flags.items()
        if value is not None and name not in free
    ]
    if given:
        raise OcformerError(
            f"`--policy-table` fixes the run's options, got {given[0]} too; drop it "
            "(with a table only --data, --n-sequences, --seed and --test-fraction "
            "apply)."
        )

    table = load_policy_table(path)
    stored = table.train_config(None, execution)
    changes = {"seed": problem_flags["--seed"]}
    changes["test_fraction"] = problem_flags["--test-fraction"]
    settings = TrainConfig.from_dict(merge(stored.to_dict(), changes), str(path))

    # Without --data, the table's own dataset recipe (name and size) applies.
    data, n_sequences = problem_flags["--data"], problem_flags["--n-sequences"]
    if data is None:
        source = table.source or {}
        if "name" not in source:
            raise OcformerError(
                f"policy table {str(path)!r} does not name its dataset; pass --data."
            )
        data = source["name"]
        if n_sequences is None:
            n_sequences = source.get("n_sequences")
    dataset = load_dataset(data, seed=settings.seed, n_sequences=n_sequences)
    return settings, dataset, table
