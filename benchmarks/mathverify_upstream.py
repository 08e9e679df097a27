"""Our math reward against Math-Verify's own upstream test suite.

    python benchmarks/mathverify_upstream.py UPSTREAM_TESTS_DIR [--out results.json]

UPSTREAM_TESTS_DIR is the ``tests/`` folder of a copy of the Math-Verify repository
(nothing is downloaded here; bring the folder yourself). Its test modules are read as
text: every ``pytest.mark.parametrize`` table with ``gold``, ``pred`` and an expected
verdict (``expected`` / ``result``) is one list of cases, evaluated with
``ast.literal_eval`` (no upstream code runs). For each case:

- *Math-Verify alone*: ``verify(parse(gold), parse(pred))`` with Math-Verify's defaults
  (the extraction configs our judge uses);
- *ours*: :func:`fs2_semionline.rewards.verify_math` (``pred`` as the response).

The reference set is the cases where Math-Verify alone gives the upstream verdict;
the script prints how often ours gives it too, splits the rest by reason (most are
responses without a ``\\boxed{}``: our reward asks for a boxed answer) and writes the
counts and every case's verdicts (by its upstream file:line) to ``--out``. Run it on two
commits to compare (``PYTHONPATH=old/src``).
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

EXPECTED_NAMES = ("expected", "result")


@dataclass
class Case:
    source: str  # file:line of the parametrize table
    gold: str
    pred: str
    expected: int
    math_verify: int = -1
    ours: int | None = None  # None: "failed" (no reward)
    our_reason: str = ""

    @property
    def category(self) -> str:
        if "\\boxed" not in self.pred and "\\fbox" not in self.pred:
            return "response without a boxed answer"
        if self.pred.count("\\boxed") + self.pred.count("\\fbox") > 1:
            return "response with several boxes"
        return "response with one box"


def _names(node: ast.expr) -> list[str] | None:
    value = ast.literal_eval(node)
    if isinstance(value, str):
        return [n.strip() for n in value.split(",")]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def read_cases(folder: Path) -> list[Case]:
    """Every (gold, pred, expected) row of the folder's parametrize tables."""
    cases: list[Case] = []
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "parametrize"):
                continue
            if len(node.args) < 2:
                continue
            try:
                names = _names(node.args[0])
                rows = ast.literal_eval(node.args[1])
            except (ValueError, SyntaxError):
                continue  # a table built by code, not literals
            if not names or "gold" not in names or "pred" not in names:
                continue
            expected = next((n for n in EXPECTED_NAMES if n in names), None)
            if expected is None:
                continue
            g, p, e = names.index("gold"), names.index("pred"), names.index(expected)
            for row in rows:
                if isinstance(row[g], str) and isinstance(row[p], str):
                    cases.append(Case(f"{path.name}:{node.lineno}", row[g], row[p], int(row[e])))
    return cases


def judge(cases: list[Case]) -> None:
    from math_verify import parse, verify

    from fs2_semionline.rewards import verify_math

    for case in cases:
        case.math_verify = int(verify(parse(case.gold), parse(case.pred)))
        verdict = verify_math(case.pred, case.gold, timeout_s=5.0)
        case.ours = None if verdict.reward is None else int(verdict.reward)
        case.our_reason = verdict.reason


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests_dir", type=Path, help="Math-Verify's tests/ folder")
    parser.add_argument("--out", type=Path, default=None, help="write every case and verdict here (JSON)")
    args = parser.parse_args()
    cases = read_cases(args.tests_dir)
    if not cases:
        sys.exit(f"{args.tests_dir}: no (gold, pred, expected) tables found")
    judge(cases)
    reference = [c for c in cases if c.math_verify == c.expected]
    agree = [c for c in reference if c.ours == c.expected]
    differ = [c for c in reference if c.ours != c.expected]
    boxed = [c for c in reference if c.category != "response without a boxed answer"]
    boxed_agree = [c for c in boxed if c.ours == c.expected]
    from importlib.metadata import version

    import fs2_semionline

    print(f"machine: {platform.platform()}, python {platform.python_version()}, commit {_commit()}")
    print(f"ours from {Path(fs2_semionline.__file__).parent}")
    print(f"math-verify {version('math-verify')}; upstream cases: {len(cases)}")
    print(f"Math-Verify alone gives the upstream verdict on {len(reference)} of {len(cases)}")
    print(f"ours gives it too on {len(agree)} of those {len(reference)}")
    print(f"  of them with a boxed answer in the response: {len(boxed_agree)} of {len(boxed)}")
    by_category = Counter(c.category for c in differ)
    for category, n in by_category.most_common():
        print(f"  differ: {n:4d}  {category}")
    for c in differ:
        if c.category != "response without a boxed answer":
            print(f"    {c.source}: expected {c.expected}, ours {c.ours} ({c.our_reason})")
            print(f"      gold {c.gold[:100]!r}")
            print(f"      pred {c.pred[-160:]!r}")
    if args.out is not None:
        summary = {
            "commit": _commit(),
            "num_cases": len(cases),
            "math_verify_agrees": len(reference),
            "ours_agrees": len(agree),
            "with_boxed_response": len(boxed),
            "ours_agrees_with_boxed_response": len(boxed_agree),
            "differ_by_category": dict(by_category),
            # Where each case stands upstream and how it was judged (the strings stay there).
            "cases": [
                {k: v for k, v in asdict(c).items() if k not in ("gold", "pred")} | {"category": c.category}
                for c in cases
            ],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
