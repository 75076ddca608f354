"""Identifiable combinations from the null space of a sensitivity matrix (see :mod:`.identify`).

For one neuron, first: parameters whose columns of S are parallel move every feature in
the same proportion (the model's exact degeneracies: ``alpha_X`` and ``I_X_w0`` give the
same simulations); each such cluster is one combination, its powers the ratios of the
columns. Then, for the other parameters, the null vectors of S (directions in log-parameter space that move no
feature) are brought to reduced row echelon form, which makes them as sparse as their span
allows; parameters that share a null vector form a group. A group of k parameters with d
null directions has k - d identifiable directions, the vectors orthogonal to its null
vectors: each is a product of powers of the group's parameters, its exponents scaled so
that the smallest is 1 and rounded to small rationals where they are within 2 % of one
(``(0.707, 0.707)`` -> ``alpha_ampa*Iampa_w0``, ``(0.707, -0.707)`` -> ``Iampa_tau/Campa``).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np

__all__ = ["combinations", "name_of", "rref", "spectra"]

_SUPPORT = 1e-3  # entries below this fraction of a vector's largest are zero (difference noise)
_ROUND = 0.02  # an exponent within 2 % of a small rational is that rational
_DENOMINATOR = 4
#: Most parameters in a combination read from a shared null space (beyond a pair, such a
#: group is more often "too few features" than a law of the model).
MAX_GROUP = 3


def combinations(S: np.ndarray, sensitive: np.ndarray, names, *, rtol: float) -> list[tuple[tuple, int]]:
    """Combinations found per neuron, with the number of neurons each was found in.

    Two steps per neuron (module docstring): parameters whose columns of S are parallel
    (angle below ``rtol``: the simulations are the same) form one combination each, of any
    size, e.g. ``alpha_ampa*Iampa_w0``; in the rest, groups of at most ``MAX_GROUP``
    parameters that share null vectors of S and have exact (small rational) exponents. A
    null space that only says "too few features for these parameters" links many
    parameters with arbitrary exponents: no combination is read from it (the rank and the
    condition number say it).

    Args:
        S: float (N, F, P) sensitivities (0 where not valid).
        sensitive: bool (N, P), the columns that move some feature.
        names: the P parameter names.
        rtol: singular values below ``rtol * s_max`` span the null space.

    Returns:
        ``[(exponents, count), ...]``, most frequent first; exponents is a tuple of
        ``(name, power)`` in ``names`` order, the power a Fraction when exact, else a float.
    """
    counts: Counter = Counter()
    for n in range(S.shape[0]):
        idx = np.flatnonzero(sensitive[n])
        if idx.size < 2:
            continue
        found, alone = _parallel(S[n][:, idx], [names[i] for i in idx], rtol)
        counts.update(found)
        if alone.size >= 2:
            M = S[n][:, idx[alone]]
            _, s, vt = np.linalg.svd(M, full_matrices=True)
            full = np.zeros(alone.size)
            full[:s.size] = s
            null = vt[full <= rtol * full[0]]
            if len(null):
                counts.update(_group_combinations(null, [names[i] for i in idx[alone]]))
    return counts.most_common()


def _parallel(M: np.ndarray, names: list[str], rtol: float) -> tuple[list[tuple], np.ndarray]:
    """Clusters of parallel columns of M (F, k) -> their combinations, and the indices of
    the columns in no cluster."""
    unit = M / np.linalg.norm(M, axis=0)
    cos = unit.T @ unit
    ratio = (M.T @ M) / np.diag(M.T @ M)[None, :]  # column i = ratio[i, j] * column j where parallel
    # sin(angle) <= rtol, and a small rational ratio: with one informative feature every column
    # is parallel to every other, but only the model's exact degeneracies have powers like 1, -1, 2
    with np.errstate(divide="ignore", invalid="ignore"):  # orthogonal columns: ratio 0, not parallel anyway
        close = (np.abs(cos) >= 1.0 - rtol ** 2 / 2) & _small_rational(ratio) & _small_rational(1.0 / ratio)
    clusters = [g for g in _groups(close) if len(g) > 1]
    out = []
    for cluster in clusters:
        rep = cluster[0]
        # column m = c_m * column rep: the features see d ln(rep) + sum c_m d ln(m)
        power = M[:, cluster].T @ M[:, rep] / (M[:, rep] @ M[:, rep])
        out.append(_exponents(power, [names[c] for c in cluster]))
    clustered = {c for cluster in clusters for c in cluster}
    return out, np.asarray([i for i in range(M.shape[1]) if i not in clustered], dtype=np.int64)


def rref(a: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Reduced row echelon form of ``a`` (d, k), partial pivoting; rows of zeros dropped."""
    r = np.array(a, dtype=np.float64)
    rows, cols = r.shape
    lead = 0
    for c in range(cols):
        if lead >= rows:
            break
        piv = lead + int(np.argmax(np.abs(r[lead:, c])))
        if abs(r[piv, c]) <= tol:
            continue
        r[[lead, piv]] = r[[piv, lead]]
        r[lead] /= r[lead, c]
        others = np.arange(rows) != lead
        r[others] -= np.outer(r[others, c], r[lead])
        lead += 1
    return r[:lead]


def _groups(support: np.ndarray) -> list[list[int]]:
    """Columns connected through rows that share them (union-find over the row supports)."""
    parent = list(range(support.shape[1]))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row in support:
        cols = np.flatnonzero(row)
        for c in cols[1:]:
            parent[root(c)] = root(cols[0])
    touched = np.flatnonzero(support.any(axis=0))
    out: dict[int, list[int]] = {}
    for c in touched:
        out.setdefault(root(c), []).append(int(c))
    return list(out.values())


def _group_combinations(null: np.ndarray, names: list[str]) -> list[tuple]:
    r = rref(null)
    r[np.abs(r) < _SUPPORT * np.abs(r).max(axis=1, keepdims=True)] = 0.0
    support = r != 0
    out = []
    for group in _groups(support):
        rows = r[support[:, group].any(axis=1)][:, group]
        d, k = rows.shape
        if k - d < 1 or k > MAX_GROUP:
            continue
        _, _, vt = np.linalg.svd(rows, full_matrices=True)
        comp = rref(vt[d:]) if k - d > 1 else vt[d:]
        for vec in comp:
            expo = _exponents(vec, [names[g] for g in group])
            if len(expo) > 1 and all(isinstance(e, Fraction) for _, e in expo):
                out.append(expo)
    return out


def _small_rational(x: np.ndarray) -> np.ndarray:
    """Where ``x`` is within ``_ROUND`` of p / q with |p|, q <= ``_DENOMINATOR``."""
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, 0.0)  # 0 is never a power here
    out = np.zeros(x.shape, dtype=bool)
    for q in range(1, _DENOMINATOR + 1):
        p = np.round(x * q)
        out |= (np.abs(p) <= _DENOMINATOR) & (p != 0) & (np.abs(x - p / q) <= _ROUND * np.maximum(1.0, np.abs(x)))
    return out


def _exponents(vec: np.ndarray, names: list[str]) -> tuple:
    """A direction -> ``((name, power), ...)``: smallest power 1, first member positive."""
    keep = np.abs(vec) >= _SUPPORT * np.abs(vec).max()
    v, members = vec[keep], [nm for nm, k in zip(names, keep) if k]
    v = v / np.abs(v).min() * np.sign(v[0])
    fracs = [Fraction(float(x)).limit_denominator(_DENOMINATOR) for x in v]
    if all(abs(float(f) - x) <= _ROUND * max(1.0, abs(x)) for f, x in zip(fracs, v)):
        return tuple(zip(members, fracs))
    return tuple((nm, round(float(x), 3)) for nm, x in zip(members, v))


def name_of(exponents) -> str:
    """``{"alpha_ampa": 1, "Iampa_w0": 1}`` -> ``"alpha_ampa*Iampa_w0"``; negative powers
    after a ``/``; other powers as ``^2``, ``^(1/2)`` or ``^0.734``."""
    def term(name, power):
        power = abs(power)
        if power == 1:
            return name
        if isinstance(power, Fraction):
            return f"{name}^{power}" if power.denominator == 1 else f"{name}^({power})"
        return f"{name}^{power:g}"

    items = list(exponents.items()) if hasattr(exponents, "items") else list(exponents)
    num = "*".join(term(n, p) for n, p in items if p > 0) or "1"
    den = [term(n, p) for n, p in items if p < 0]
    if not den:
        return num
    return f"{num}/{den[0]}" if len(den) == 1 else f"{num}/({'*'.join(den)})"


def spectra(S: np.ndarray, *, rtol: float, min_sensitivity: float, noise, prior: float) -> dict[str, np.ndarray]:
    """Per-neuron singular values, rank, condition numbers, sensitive columns, posterior sd and
    correlation of the log-parameters (``identify`` module docstring).

    Args:
        S: float (N, F, P), 0 where not valid.
        noise: relative feature noise, a float or (F,); prior: prior sd of each ln theta.
    """
    n, f, p = S.shape
    sv = np.zeros((n, p))
    if f:
        s = np.linalg.svd(S, compute_uv=False)
        sv[:, :s.shape[1]] = s
    smax = sv[:, 0]
    rank = ((sv > rtol * smax[:, None]) & (sv >= min_sensitivity)).sum(axis=1)
    eps = np.finfo(float).eps
    condition = smax / np.maximum(sv[:, -1], eps * np.maximum(smax, eps))
    s_rank = np.take_along_axis(sv, np.maximum(rank - 1, 0)[:, None], axis=1)[:, 0]
    cond_ident = np.where(rank > 0, smax / np.where(rank > 0, s_rank, 1.0), 1.0)
    weights = np.broadcast_to(1.0 / np.asarray(noise, dtype=np.float64) ** 2, (f,))
    fisher = np.einsum("nfp,f,nfq->npq", S, weights, S) + np.eye(p) / prior ** 2
    cov = np.linalg.inv(fisher)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    return {"singular_values": sv, "rank": rank, "condition": condition, "condition_identifiable": cond_ident,
            "sensitive": np.sqrt((S ** 2).sum(axis=1)) >= min_sensitivity,
            "uncertainty": sd, "correlation_per_neuron": cov / (sd[:, :, None] * sd[:, None, :]), "covariance": cov}
