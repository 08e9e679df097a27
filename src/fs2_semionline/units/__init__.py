"""fairseq2 TrainUnit / EvalUnit implementations.

fairseq2 0.8.1: ``fairseq2.trainer`` and ``fairseq2.evaluator`` import
``fairseq2.recipe.base``, which imports them back; imported first, either fails with a
circular ImportError. Loading ``fairseq2.recipe`` first breaks the cycle.
"""

import fairseq2.recipe  # noqa: F401  (see above)
