"""The exact torch path, one module per stage of docs/spec.md: pyramid (section 1), scores
(2, 11), select (3, 4, 11), gather (5), scatter (6), composed in ``attention.py``. Every Triton
kernel in ``ops/triton/`` is tested against its twin here."""
