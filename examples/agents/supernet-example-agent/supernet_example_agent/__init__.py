"""An example Supernet agent package: ``calc-explain`` (see :mod:`supernet_example_agent.agent`)."""

from supernet_example_agent.agent import CalcExplainAgent

__all__ = ["CalcExplainAgent"]
