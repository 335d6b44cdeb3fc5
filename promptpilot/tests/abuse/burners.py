"""Templates that stay inside every size limit but burn CPU for minutes."""

# Ten thousand sorts of ten thousand strings: within the loop and size limits, ~25 min of CPU.
SORT_IN_A_LOOP = (
    "{% set xs = range(10000)|list %}"
    "{% for i in range(10000) %}{{ (xs|map('string')|sort)[0] }}{% endfor %}"
)
