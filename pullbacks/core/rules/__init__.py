"""The rules: one module per family of operators (``relu``, ``pool``), each declaring the
torch functions it intercepts and its soft backward. ``pullbacks.core.table`` collects them."""
