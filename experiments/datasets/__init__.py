"""Graph data sets in the TU text format, subgraph-pattern histograms, and CV splits: the PTC
study's data-set code (``experiments/ptc.py``), not part of the jaxlift library.

Typical use (PTC_MR)::

    graphs = read_tu("../shared/data/PTC_MR")
    names = read_readme_labels("../shared/data/PTC_MR/README.txt")
    for train, test in stratified_kfold([g.label for g in graphs], k=10, seed=0):
        vocab = PatternVocabulary(max_size=2, min_count=2).fit([graphs[i] for i in train])
        x_train = np.log1p(vocab.transform([graphs[i] for i in train]))   # (N_train, V)
        ...
    per_atom = vocab.atom_scores(graphs[0], pattern_scores)              # (n_atoms,)
"""
from .subgraphs import BOND_SYMBOLS, Pattern, PatternVocabulary, atom_scores, enumerate_patterns
from .tu import Graph, TUFormatError, read_readme_labels, read_tu, stratified_kfold

__all__ = [
    "Graph",
    "TUFormatError",
    "read_tu",
    "read_readme_labels",
    "stratified_kfold",
    "Pattern",
    "PatternVocabulary",
    "enumerate_patterns",
    "atom_scores",
    "BOND_SYMBOLS",
]
