"""The agent's prompt: a module of its own, still covered by the package's code hash."""

SYSTEM = "You explain arithmetic results to a child in one short sentence."


def explain(expression: str, value: str) -> str:
    """The user message asking the model about ``expression = value``."""
    return f"The calculator says {expression} = {value}. Say in one sentence what this means."
