"""The rules: one module per family of operators (``relu``, ``pool`` (max_pool), ``activation``
(silu, gelu, hardswish, mish), ``norm``, ``attention``), each declaring the torch functions it
intercepts, what it leaves in the autograd graph and its soft backward. ``pullbacks.core.table``
collects them."""
