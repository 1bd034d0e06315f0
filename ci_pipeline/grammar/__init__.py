"""The small languages of the configuration: field conditions, segment rules, measure expressions and the
catalogue of probabilistic match comparisons.

Both the configuration (to validate) and the stages (to evaluate) use these parsers, so this package imports
neither: it depends on pydantic and the standard library only.
"""

from ci_pipeline.grammar.conditions import OPERATORS, Condition, parse_period
from ci_pipeline.grammar.expression import ExpressionError, expression_depth, parse, references
from ci_pipeline.grammar.rules import RFM_TEMPLATES, Rule, RuleError, parse_node, parse_rules, too_deep, walk

__all__ = [
    "OPERATORS",
    "RFM_TEMPLATES",
    "Condition",
    "ExpressionError",
    "Rule",
    "RuleError",
    "expression_depth",
    "parse",
    "parse_node",
    "parse_period",
    "parse_rules",
    "references",
    "too_deep",
    "walk",
]
