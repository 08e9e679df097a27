"""Prompt templates of the paper (Figures 4 and 5) in the Llama-3 chat format.

The prompt text carries every special token itself (``<|begin_of_text|>`` and the
headers), so fairseq2's tokenizer and vLLM see the same token ids when they encode it
without adding BOS/EOS of their own.
"""

from __future__ import annotations

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"

SPECIAL_TOKENS: tuple[str, ...] = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT, PAD)

VERIFIABLE_INSTRUCTION = (
    "Given the following problem, reason and give a final answer to the problem.\n"
    "Problem: {problem}\n"
    "Your response should end with \u2018The final answer is $\\boxed{{[answer]}}$. "
    "I hope it is correct.\u2019 where [answer] is the response to the problem."
)

ANSWER_SUFFIX = "The final answer is $\\boxed{{{answer}}}$. I hope it is correct."


def chat_prompt(user_message: str) -> str:
    """One user turn, ending with the assistant header the model continues from."""
    return (
        f"{BEGIN_OF_TEXT}{START_HEADER}user{END_HEADER}\n\n{user_message}{EOT}{START_HEADER}assistant{END_HEADER}\n\n"
    )


def verifiable_prompt(problem: str) -> str:
    """Figure 4: the math template asking for a boxed final answer."""
    return chat_prompt(VERIFIABLE_INSTRUCTION.format(problem=problem))


def non_verifiable_prompt(instruction: str) -> str:
    """Figure 5: the chat instruction as it is, in a user turn."""
    return chat_prompt(instruction)


def final_answer_sentence(answer_latex: str) -> str:
    """The closing sentence Figure 4 asks for, e.g. for the SFT targets."""
    return ANSWER_SUFFIX.format(answer=answer_latex)


#: The template of each task: ``math`` is verifiable (Figure 4), ``chat`` is not (Figure 5).
TASK_TEMPLATES = {"math": verifiable_prompt, "chat": non_verifiable_prompt}
