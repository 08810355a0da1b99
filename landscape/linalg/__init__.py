"""Matrix-free numerics on symmetric operators given as ``matmat(V [k, n]) -> [k, n]``.

Owns the operator type (``operator.SymmetricOperator``: such a callable with its size, dtype,
device and a matvec counter), Lanczos and block Lanczos, MINRES-QLP, regularised least-squares
spaces, stochastic trace estimators and stochastic Lanczos quadrature; one algorithm per module,
named after its source. Knows nothing of models, storage, tracking or plots.
"""
