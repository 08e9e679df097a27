"""Prepares the paper's datasets from files the user has or from the Hub by name.

    python -m fs2_semionline.data.prepare numinamath IN... --out DIR [--seed 0]
    python -m fs2_semionline.data.prepare wildchat IN... --out DIR [--num N] [--valid N] [--english-only]
    python -m fs2_semionline.data.prepare math500 IN... --out DIR
    python -m fs2_semionline.data.prepare amc23 IN... --out DIR [--url-contains 2023]
    python -m fs2_semionline.data.prepare aime IN... --out DIR

(also ``fs2-semionline data ...``). Inputs are the datasets' own parquet or JSON Lines
files (a folder stands for every such file below it), folders written by ``datasets``'
``save_to_disk``, or dataset names as the Hub spells them (``AI-MO/NuminaMath-1.5``,
``HuggingFaceH4/MATH-500:test``), loaded and cached by ``datasets.load_dataset``; the
outputs are the project's JSONL files plus ``stats.json``. Filtering follows the paper
(arXiv 2506.21495).

Modules: :mod:`~fs2_semionline.data.prepare.common` (reading input tables, stats and
outputs, the error policy, asset cards), :mod:`~fs2_semionline.data.prepare.numinamath`
(§3.1), :mod:`~fs2_semionline.data.prepare.wildchat` (§3.2) and
:mod:`~fs2_semionline.data.prepare.test_sets` (Math500 / AMC23); this package holds the
command line and re-exports the public names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fs2_semionline.core.errors import UserInputError, check_output_dir, exit_with
from fs2_semionline.data.prepare.common import (
    MissingColumnError,
    PrepareStats,
    number_text,
    resolve_dataset_dir,
)
from fs2_semionline.data.prepare.numinamath import (
    DEFAULT_HELD_OUT_SIZE,
    NUMINA_SYNTHETIC_SOURCES,
    prepare_numinamath,
)
from fs2_semionline.data.prepare.test_sets import prepare_aime, prepare_amc23, prepare_eval_set, prepare_math500
from fs2_semionline.data.prepare.wildchat import prepare_wildchat

__all__ = [
    "DEFAULT_HELD_OUT_SIZE",
    "MissingColumnError",
    "NUMINA_SYNTHETIC_SOURCES",
    "PrepareStats",
    "main",
    "number_text",
    "prepare_aime",
    "prepare_amc23",
    "prepare_eval_set",
    "prepare_math500",
    "prepare_numinamath",
    "prepare_wildchat",
    "resolve_dataset_dir",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fs2-semionline data",
        description="Prepare the paper's datasets from local parquet/JSONL files, save_to_disk folders or "
        "dataset names (owner/name[:split], loaded and cached by datasets.load_dataset).",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "inputs", nargs="+", metavar="IN", help="parquet/JSONL files, folders or dataset names (owner/name[:split])"
        )
        p.add_argument("--out", type=Path, required=True, help="output folder")
        return p

    p = add("numinamath", "NuminaMath-1.5 / NuminaMath-CoT -> train/valid/test.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-size", type=int, default=DEFAULT_HELD_OUT_SIZE)
    p.add_argument("--test-size", type=int, default=DEFAULT_HELD_OUT_SIZE)
    p.add_argument("--layout", choices=("auto", "1.5", "cot"), default="auto")

    p = add("wildchat", "WildChat(-1M) -> first-turn user prompts in train.jsonl (+ valid.jsonl)")
    p.add_argument("--num", type=int, default=None, help="training prompts to sample (default: all)")
    p.add_argument("--valid", type=int, default=0, help="validation prompts to split off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--english-only", action="store_true", help="keep conversations with language == English")
    p.add_argument("--single-turn-only", action="store_true", help="keep conversations of one turn only")
    p.add_argument("--drop-toxic", action="store_true", help="drop conversations flagged toxic")

    add("math500", "MATH-500 -> test.jsonl")
    p = add("amc23", "AMC23 -> test.jsonl")
    p.add_argument("--url-contains", default=None, help="keep rows whose url contains this (e.g. 2023)")
    add("aime", "AIME 2024 / 2025 -> test.jsonl")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        check_output_dir(args.out, "--out")
        if args.dataset == "numinamath":
            stats = prepare_numinamath(
                args.inputs,
                args.out,
                seed=args.seed,
                valid_size=args.valid_size,
                test_size=args.test_size,
                layout=args.layout,
            )
        elif args.dataset == "wildchat":
            stats = prepare_wildchat(
                args.inputs,
                args.out,
                num=args.num,
                valid=args.valid,
                seed=args.seed,
                english_only=args.english_only,
                single_turn_only=args.single_turn_only,
                drop_toxic=args.drop_toxic,
            )
        elif args.dataset == "math500":
            stats = prepare_math500(args.inputs, args.out)
        elif args.dataset == "aime":
            stats = prepare_aime(args.inputs, args.out)
        else:
            stats = prepare_amc23(args.inputs, args.out, url_contains=args.url_contains)
    except UserInputError as ex:
        exit_with(ex)
    print(stats.summary())
    print(f"wrote {args.out}")
