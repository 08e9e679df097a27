"""``fs2-semionline export``: a trained checkpoint to a Hugging Face folder that
transformers and vLLM load as they are.

    fs2-semionline export RUN_DIR OUT_DIR                # the run's last checkpoint
    fs2-semionline export RUN_DIR OUT_DIR --best         # the one validation scored best
    fs2-semionline export RUN_DIR OUT_DIR --step 40 --dtype bfloat16
    fs2-semionline export RUN_DIR/checkpoints/step_40 OUT_DIR

The model is read with fairseq2's own checkpoint loader, which also merges FSDP shards
(``sdp_00.pt``, ``sdp_01.pt``, ...), from the model card fairseq2 writes beside the
checkpoints (``checkpoints/model.yaml``: family and config). The folder is written by
:func:`fs2_semionline.glue.hf_export.export_hf_model`, the code path the vLLM generator's
seed export uses: safetensors weights, ``config.json`` with the tokenizer's real
BOS/EOS/PAD ids, ``generation_config.json`` with every end-of-turn id, and the
tokenizer files (from the run's tokenizer card).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from fairseq2.checkpoint import HuggingFaceExportCallbackArgs, HuggingFaceExporter, HuggingFaceExportOptions
from fairseq2.gang import Gangs, broadcast_flag
from fairseq2.logging import log

from fs2_semionline.core.errors import ConfigError, UserInputError, check_output_dir, exit_with
from fs2_semionline.glue.container import replace_provider
from fs2_semionline.runs.checkpoints import best_scored_step, checkpoint_model_dir, checkpoint_steps


@dataclass(frozen=True)
class CheckpointRef:
    run_dir: Path
    step: int

    @property
    def model_dir(self) -> Path:
        return checkpoint_model_dir(self.run_dir, self.step)


def find_checkpoint(source: Path, *, step: int | None = None, best: bool = False) -> CheckpointRef:
    """A run folder (then ``step``, ``best`` or its last checkpoint), or one checkpoint's
    ``checkpoints/step_N`` (or its ``model``) folder."""
    source = Path(source)
    if source.name == "model" and source.parent.name.startswith("step_"):
        source = source.parent
    if source.name.startswith("step_") and source.parent.name == "checkpoints":
        if step is not None or best:
            raise ConfigError(f"{source} is one checkpoint: --step and --best choose among a run's checkpoints")
        return CheckpointRef(source.parent.parent, int(source.name.removeprefix("step_")))
    if not (source / "checkpoints").is_dir():
        raise ConfigError(f"{source}: neither a run folder (with checkpoints/) nor a checkpoints/step_N folder")
    steps = checkpoint_steps(source)
    if not steps:
        raise ConfigError(f"{source}/checkpoints holds no step_N checkpoint")
    if best:
        scored = best_scored_step(source)
        if scored is None:
            raise ConfigError(f"{source}: no checkpoint has a validation score (--best needs regime.score_metric)")
        return CheckpointRef(source, scored)
    if step is not None:
        if step not in steps:
            raise ConfigError(f"{source}: no checkpoint of step {step} (there are {steps})")
        return CheckpointRef(source, step)
    return CheckpointRef(source, steps[-1])


def export_checkpoint(ref: CheckpointRef, out_dir: Path, *, dtype: torch.dtype | None = None) -> Path:
    """Loads the checkpoint (merging FSDP shards) and writes the Hugging Face folder."""
    from fairseq2.assets import AssetStore
    from fairseq2.data.tokenizers import load_tokenizer
    from fairseq2.gang import create_fake_gangs
    from fairseq2.models.family import ModelFamily
    from fairseq2.runtime.dependency import get_dependency_resolver
    from fairseq2.utils.structured import StandardValueConverter

    from fs2_semionline.generation.factory import tokenizer_folder
    from fs2_semionline.glue.hf_export import export_hf_model

    card_file = ref.run_dir / "checkpoints" / "model.yaml"
    config_file = ref.run_dir / "config.yaml"
    for path in (card_file, config_file, ref.model_dir):
        if not path.exists():
            raise ConfigError(f"{path} is missing: not a checkpoint of a fairseq2 run")
    card = yaml.safe_load(card_file.read_text())
    resolver = get_dependency_resolver()
    family = resolver.resolve(ModelFamily, key=card["model_family"])
    model_config = StandardValueConverter().structure(card["model_config"], family.config_kls)
    tokenizer_name = (yaml.safe_load(config_file.read_text()).get("tokenizer") or {}).get("name")
    if not tokenizer_name:
        raise ConfigError(f"{config_file}: tokenizer.name is not set; export needs the run's tokenizer card")
    device = torch.device("cpu")
    model = family.load_custom_model(
        ref.model_dir,
        model_config,
        create_fake_gangs(device),
        torch.float32 if dtype is None else dtype,
        load_rank0_only=False,
        mmap=False,
        restrict=None,
    )
    tokenizer = load_tokenizer(tokenizer_name)
    tokenizer_dir = tokenizer_folder(resolver.resolve(AssetStore), tokenizer_name)
    state = {k: v.detach().to(device) for k, v in model.state_dict().items()}
    return export_hf_model(
        state, model_config, tokenizer.vocab_info, Path(out_dir), tokenizer_dir=tokenizer_dir, family=family.name
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fs2-semionline export", description="A trained checkpoint to a Hugging Face folder."
    )
    parser.add_argument("source", type=Path, help="a run folder, or one of its checkpoints/step_N folders")
    parser.add_argument("out_dir", type=Path, help="the Hugging Face folder to write")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="the checkpoint of this step (default: the last)")
    which.add_argument("--best", action="store_true", help="the checkpoint validation scored best")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="the weights' dtype (default: as trained)",
    )
    args = parser.parse_args(argv)
    try:
        ref = find_checkpoint(args.source, step=args.step, best=args.best)
        check_output_dir(args.out_dir, "OUT_DIR")
        out = export_checkpoint(ref, args.out_dir, dtype=getattr(torch, args.dtype) if args.dtype else None)
    except UserInputError as err:
        exit_with(err)
    print(f"exported {ref.model_dir} (step {ref.step}) to {out}")


class CheckpointHFExporter(HuggingFaceExporter):
    """``regime.export_hugging_face=true``: after each checkpoint, rank 0 runs
    ``fs2-semionline export`` on it into ``checkpoints/step_N/hg`` (the folder fairseq2's
    own exporter writes), out of process like fairseq2's, so the trainer holds no second
    copy of the weights. It replaces fairseq2's exporter, which writes Llama-3's token ids
    for any vocabulary and no tokenizer files; there is one exporter, this module's."""

    def __init__(self, checkpoint_dir: Path, gangs: Gangs) -> None:
        self._checkpoint_dir = Path(checkpoint_dir)
        self._gangs = gangs
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._op: Future[Callable[[], None]] | None = None

    def export(self, step_nr: int, options: HuggingFaceExportOptions | None = None) -> None:
        import subprocess
        import sys

        opts = options if options is not None else HuggingFaceExportOptions()
        self.maybe_complete_operation(blocking=True)
        step_dir = self._checkpoint_dir / f"step_{step_nr}"
        is_rank0 = self._gangs.root.rank == 0

        def run() -> Callable[[], None]:
            returncode = 0
            if is_rank0:
                cmd = [sys.executable, "-m", "fs2_semionline.cli", "export", str(step_dir), str(step_dir / "hg")]
                with open(step_dir / "hg.stdout", "w") as out, open(step_dir / "hg.stderr", "w") as err:
                    returncode = subprocess.run(cmd, stdout=out, stderr=err).returncode

            def commit() -> None:
                if returncode != 0:
                    log.warning("Hugging Face export of step {} failed; see {}", step_nr, step_dir / "hg.stderr")
                elif opts.export_callback is not None:
                    opts.export_callback(HuggingFaceExportCallbackArgs(step_nr))

            return commit

        if opts.blocking:
            run()()
        else:
            self._op = self._pool.submit(run)

    def maybe_complete_operation(self, *, blocking: bool = False) -> bool | None:
        if self._op is None:
            return None
        root = self._gangs.root
        if blocking:
            commit = self._op.result()
            root.barrier()
        else:
            done = self._op.done() if root.rank == 0 else True
            if not broadcast_flag(root, done):
                return False
            commit = self._op.result()
        self._op = None
        commit()
        return True

    @property
    def is_exporting(self) -> bool:
        return self._op is not None


def register_hf_exporter(container: object) -> None:
    """Makes ``regime.export_hugging_face=true`` use :class:`CheckpointHFExporter`.

    fairseq2 0.8.1 registers its own exporter first; ``container.replace_provider`` swaps it."""
    from fairseq2.checkpoint import NOOP_HG_EXPORTER, CheckpointDir
    from fairseq2.recipe.config import RegimeSection

    def create(resolver: object) -> object:
        if not resolver.resolve(RegimeSection).export_hugging_face:  # type: ignore[attr-defined]
            return NOOP_HG_EXPORTER
        checkpoint_dir = resolver.resolve(CheckpointDir).path  # type: ignore[attr-defined]
        if checkpoint_dir is None:  # fairseq2's default: OUTPUT_DIR/checkpoints
            checkpoint_dir = resolver.resolve(Path) / "checkpoints"  # type: ignore[attr-defined]
        return CheckpointHFExporter(checkpoint_dir, resolver.resolve(Gangs))  # type: ignore[attr-defined]

    replace_provider(container, HuggingFaceExporter, create)  # type: ignore[arg-type]
