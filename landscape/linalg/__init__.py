"""Matrix-free numerics on symmetric operators given as ``matmat(V [k, n]) -> [k, n]``.

Owns Lanczos, MINRES-QLP, stochastic trace estimators and stochastic Lanczos quadrature; one
algorithm per module, named after its source. Knows nothing of models, storage, tracking or plots.
"""
