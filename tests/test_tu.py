"""Tests for experiments.datasets (the PTC study's data-set code): the TU reader,
subgraph-pattern histograms, atom scores, CV folds."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from experiments.datasets import (
    Graph,
    Pattern,
    PatternVocabulary,
    TUFormatError,
    atom_scores,
    enumerate_patterns,
    read_readme_labels,
    read_tu,
    stratified_kfold,
)

C, O, N = 5, 2, 3  # PTC_MR atom labels
TRIPLE, DOUBLE, SINGLE, AROMATIC = 0, 1, 2, 3


# ------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def ptc(shared_data):
    return read_tu(shared_data / "PTC_MR")


def _write_tu(folder: Path, name: str, files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, text in files.items():
        (folder / f"{name}_{suffix}.txt").write_text(text)
    return folder


def _tiny_files() -> dict:
    # 2 graphs; nodes interleaved: 1,3,4 -> graph 1; 2,5 -> graph 2.
    # graph 1: 1-3 (single), 3-4 (double), both directions; graph 2: 2-5 given one way only.
    return {
        "A": "1, 3\n3, 1\n3, 4\n4, 3\n2, 5\n",
        "edge_labels": "2\n2\n1\n1\n0\n",
        "graph_indicator": "1\n2\n1\n1\n2\n",
        "graph_labels": "1\n-1\n",
        "node_labels": "5\n3\n5\n2\n3\n",
        "node_attributes": "0.5, 1\n1, 2\n1.5, 3\n2, 4\n2.5, 5\n",
    }


def _graph(node_labels, bonds, label=0) -> Graph:
    """A graph from atom labels and ``(i, j, bond_label)`` triples."""
    bonds = sorted((min(i, j), max(i, j), b) for i, j, b in bonds)
    return Graph(
        node_labels=np.asarray(node_labels, np.int64),
        edges=np.asarray([(i, j) for i, j, _ in bonds], np.int64).reshape(-1, 2),
        edge_labels=np.asarray([b for *_, b in bonds], np.int64),
        label=label,
        node_ids=np.arange(1, len(node_labels) + 1),
    )


def _permuted(g: Graph, perm: np.ndarray) -> Graph:
    """The same molecule with atom ``i`` renamed ``perm[i]``."""
    labels = np.empty_like(g.node_labels)
    labels[perm] = g.node_labels
    return _graph(labels, [(perm[i], perm[j], b)
                           for (i, j), b in zip(g.edges.tolist(), g.edge_labels.tolist())], g.label)


def _counts(d: dict) -> dict:
    return {p: len(o) for p, o in d.items()}


# ----------------------------------------------------------------------------- PTC_MR reading
def test_ptc_mr_counts(ptc, shared_data):
    assert len(ptc) == 344  # shared/data/README.md
    raw = shared_data / "PTC_MR"
    n_lines = lambda f: len((raw / f).read_text().split())  # noqa: E731
    assert sum(g.num_nodes for g in ptc) == n_lines("PTC_MR_node_labels.txt") == 4915
    # _A lists both directions of each bond
    assert 2 * sum(g.num_edges for g in ptc) == n_lines("PTC_MR_edge_labels.txt") == 10108
    assert Counter(g.label for g in ptc) == {1: 152, -1: 192}
    atoms = Counter(int(a) for g in ptc for a in g.node_labels)
    assert atoms[C] == 3372 and atoms[O] == 693 and atoms[N] == 368
    bonds = Counter(int(b) for g in ptc for b in g.edge_labels)
    assert bonds == {TRIPLE: 6, DOUBLE: 426, SINGLE: 2638, AROMATIC: 1984}
    names = read_readme_labels(raw / "README.txt")
    assert set(atoms) <= set(names["node"]) and len(names["node"]) == 18
    assert names["node"][C] == "C" and names["node"][0] == "In" and names["node"][17] == "Ca"
    assert names["edge"] == {0: "triple", 1: "double", 2: "single", 3: "aromatic"}


def test_ptc_mr_graph_structure(ptc):
    g0 = ptc[0]  # indium phosphide: In#P
    np.testing.assert_array_equal(g0.node_labels, [0, 1])
    np.testing.assert_array_equal(g0.edges, [[0, 1]])
    np.testing.assert_array_equal(g0.edge_labels, [TRIPLE])
    assert g0.label == 1 and g0.index == 0
    next_id = 1
    for g in ptc:
        np.testing.assert_array_equal(g.node_ids, np.arange(next_id, next_id + g.num_nodes))
        next_id += g.num_nodes
        assert np.all(g.edges[:, 0] < g.edges[:, 1]) and g.edges.max(initial=0) < g.num_nodes
        assert len({tuple(e) for e in g.edges.tolist()}) == g.num_edges
        assert g.edge_labels.shape == (g.num_edges,)
        assert sum(len(n) for n in g.neighbours()) == 2 * g.num_edges


# ------------------------------------------------------------------------ hand-made TU files
def test_tiny_tu_dataset(tmp_path):
    graphs = read_tu(_write_tu(tmp_path / "TINY", "TINY", _tiny_files()))
    assert len(graphs) == 2
    g1, g2 = graphs
    np.testing.assert_array_equal(g1.node_ids, [1, 3, 4])
    np.testing.assert_array_equal(g1.node_labels, [C, C, O])
    np.testing.assert_array_equal(g1.edges, [[0, 1], [1, 2]])
    np.testing.assert_array_equal(g1.edge_labels, [SINGLE, DOUBLE])
    np.testing.assert_array_equal(g1.node_attributes, [[0.5, 1], [1.5, 3], [2, 4]])
    assert g1.label == 1 and g2.label == -1
    np.testing.assert_array_equal(g2.node_ids, [2, 5])
    np.testing.assert_array_equal(g2.edges, [[0, 1]])  # listed in one direction only
    np.testing.assert_array_equal(g2.edge_labels, [TRIPLE])
    assert g1.neighbours() == [[(1, SINGLE)], [(0, SINGLE), (2, DOUBLE)], [(1, DOUBLE)]]


def test_tiny_tu_without_optional_files(tmp_path):
    files = {k: v for k, v in _tiny_files().items() if k in ("A", "graph_indicator", "graph_labels")}
    graphs = read_tu(_write_tu(tmp_path / "d", "X", files), name="X")
    assert graphs[0].node_labels is None and graphs[0].edge_labels is None and graphs[0].num_nodes == 3
    assert graphs[0].neighbours()[1] == [(0, -1), (2, -1)]
    # unlabelled atoms and bonds become label -1 in patterns
    pats = enumerate_patterns(graphs[0], 2)
    assert _counts(pats) == {Pattern("atom", (-1,)): 3, Pattern("bond", (-1, -1, -1)): 2,
                             Pattern("path2", (-1,) * 5): 1}


def test_missing_required_file_is_named(tmp_path):
    files = _tiny_files()
    del files["graph_labels"]
    folder = _write_tu(tmp_path / "d", "TINY", files)
    with pytest.raises(FileNotFoundError, match="TINY_graph_labels.txt"):
        read_tu(folder)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_tu(tmp_path / "nowhere")
    _write_tu(folder, "OTHER", {"A": "1, 2\n"})
    with pytest.raises(FileNotFoundError, match="OTHER, TINY"):
        read_tu(folder)  # two *_A.txt files: which data set?


@pytest.mark.parametrize(
    "suffix, text, match",
    [
        ("A", "1, 3\n3, 1\n3; 4\n4, 3\n2, 5\n", r"TINY_A.txt:3: expected 2 comma-separated"),
        ("A", "1, 3\n3, 1\n3, x\n4, 3\n2, 5\n", r"TINY_A.txt:3: expected integer"),
        ("A", "1, 3\n3, 1\n3, 4\n4, 9\n2, 5\n", r"TINY_A.txt:4: node id out of range 1..5"),
        ("A", "1, 3\n3, 1\n3, 4\n4, 2\n2, 5\n", r"TINY_A.txt:4: edge \[4, 2\] joins graph 1 and graph 2"),
        ("A", "1, 3\n\n3, 4\n4, 3\n2, 5\n", r"TINY_A.txt:2: blank line"),
        ("edge_labels", "2\n2\n1\n", r"TINY_edge_labels.txt: has 3 lines but TINY_A.txt \(5 edges\) needs 5"),
        ("edge_labels", "2\n2\n1\n2\n0\n", r"TINY_edge_labels.txt:4: edge \[4, 3\] has label 2 here but 1 on line 3"),
        ("graph_indicator", "1\n2\n1\n3\n2\n", r"TINY_graph_indicator.txt:4: graph id 3 is outside 1..2"),
        ("graph_labels", "1\n", r"TINY_graph_indicator.txt:2: graph id 2 is outside 1..1"),
        ("graph_labels", "\n", r"TINY_graph_labels.txt: is empty"),
        ("node_labels", "5\n3\n5\n2\n", r"TINY_node_labels.txt: has 4 lines but .* needs 5"),
        ("node_labels", "5\n3\nC\n2\n3\n", r"TINY_node_labels.txt:3: expected integer"),
        ("node_attributes", "0.5, 1\n1, 2\n1.5\n2, 4\n2.5, 5\n", r"TINY_node_attributes.txt:3: expected 2 values"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, suffix, text, match):
    files = _tiny_files()
    files[suffix] = text
    with pytest.raises(TUFormatError, match=match) as info:
        read_tu(_write_tu(tmp_path / "TINY", "TINY", files))
    assert isinstance(info.value, ValueError)


def test_trailing_blank_lines_are_fine(tmp_path):
    files = _tiny_files()
    files["A"] += "\n\n"
    assert len(read_tu(_write_tu(tmp_path / "TINY", "TINY", files))) == 2


# -------------------------------------------------------------------------- patterns
def test_patterns_of_acetaldehyde_like_chain():
    g = _graph([C, C, O], [(0, 1, SINGLE), (1, 2, DOUBLE)])  # C-C=O
    pats = enumerate_patterns(g, max_size=3)
    assert pats == {
        Pattern("atom", (C,)): [(0,), (1,)],
        Pattern("atom", (O,)): [(2,)],
        Pattern("bond", (C, SINGLE, C)): [(0, 1)],
        Pattern("bond", (O, DOUBLE, C)): [(2, 1)],  # reversed: O (2) < C (5)
        Pattern("path2", (O, DOUBLE, C, SINGLE, C)): [(2, 1, 0)],
    }
    assert set(enumerate_patterns(g, max_size=0)) == {Pattern("atom", (C,)), Pattern("atom", (O,))}
    assert len(enumerate_patterns(g, max_size=1)) == 4


def test_patterns_of_substituted_triangle():
    # cyclopropanol-like: C0, C1, C2 in a ring of single bonds, O3 on C0
    g = _graph([C, C, C, O], [(0, 1, SINGLE), (1, 2, SINGLE), (0, 2, SINGLE), (0, 3, SINGLE)])
    counts = _counts(enumerate_patterns(g, max_size=3))
    s = SINGLE
    assert counts == {
        Pattern("atom", (C,)): 3,
        Pattern("atom", (O,)): 1,
        Pattern("bond", (C, s, C)): 3,
        Pattern("bond", (O, s, C)): 1,
        Pattern("path2", (C, s, C, s, C)): 3,
        Pattern("path2", (O, s, C, s, C)): 2,
        Pattern("path3", (O, s, C, s, C, s, C)): 2,
        Pattern("triangle", (C, s, C, s, C, s)): 1,
    }
    no_tri = _counts(enumerate_patterns(g, max_size=3, triangles=False))
    assert Pattern("triangle", (C, s, C, s, C, s)) not in no_tri and len(no_tri) == 7


def test_triangle_canonical_form_is_rotation_and_reflection_invariant():
    base = _graph([N, C, O], [(0, 1, DOUBLE), (1, 2, SINGLE), (2, 0, AROMATIC)])
    expected = enumerate_patterns(base, 3)
    tri = [p for p in expected if p.kind == "triangle"]
    # smallest atom label first (O = 2), then the smaller bond direction: O-C is single (2) vs O:N aromatic (3)
    assert tri == [Pattern("triangle", (O, SINGLE, C, DOUBLE, N, AROMATIC))]
    for perm in ([0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1], [2, 1, 0], [1, 0, 2]):
        got = enumerate_patterns(_permuted(base, np.array(perm)), 3)
        assert _counts(got) == _counts(expected)


def test_pattern_counts_match_graph_identities(ptc):
    """Independent counts: paths of 2 bonds = Σ_v C(deg v, 2); triangles = tr(A³)/6;
    paths of 3 bonds = Σ_{edges jk} (deg j − 1)(deg k − 1) − 3·triangles."""
    for g in ptc[::7]:
        a = np.zeros((g.num_nodes, g.num_nodes), np.int64)
        a[g.edges[:, 0], g.edges[:, 1]] = a[g.edges[:, 1], g.edges[:, 0]] = 1
        deg = a.sum(1)
        tri = np.trace(a @ a @ a) // 6
        by_kind = Counter()
        for p, occ in enumerate_patterns(g, 3).items():
            by_kind[p.kind] += len(occ)
        assert by_kind["atom"] == g.num_nodes
        assert by_kind["bond"] == g.num_edges
        assert by_kind["path2"] == int((deg * (deg - 1) // 2).sum())
        assert by_kind["triangle"] == tri
        assert by_kind["path3"] == int(sum((deg[j] - 1) * (deg[k] - 1) for j, k in g.edges)) - 3 * tri


def test_patterns_are_invariant_to_atom_order(ptc):
    rng = np.random.default_rng(0)
    for g in ptc[1::23]:
        perm = rng.permutation(g.num_nodes)
        got = enumerate_patterns(_permuted(g, perm), 3)
        want = enumerate_patterns(g, 3)
        assert _counts(got) == _counts(want)
        # the same occurrences, renamed
        for p, occ in want.items():
            assert (sorted(tuple(sorted(perm[list(o)].tolist())) for o in occ)
                    == sorted(tuple(sorted(o)) for o in got[p]))


def test_pattern_validation_and_describe():
    with pytest.raises(ValueError, match="unknown kind"):
        Pattern("ring", (1,))
    with pytest.raises(ValueError, match="has 5 labels"):
        Pattern("path2", (1, 2, 3))
    with pytest.raises(ValueError, match="max_size"):
        enumerate_patterns(_graph([C], []), max_size=4)
    names = {C: "C", O: "O", N: "N"}
    bonds = {0: "triple", 1: "double", 2: "single", 3: "aromatic"}
    assert Pattern("path2", (O, DOUBLE, C, SINGLE, N)).describe(names, bonds) == "O=C-N"
    assert Pattern("triangle", (C, AROMATIC, C, AROMATIC, N, SINGLE)).describe(names, bonds) == "triangle(C:C:N-)"
    assert Pattern("bond", (C, 7, C)).describe(names, {7: "quadruple"}) == "C[quadruple]C"


# -------------------------------------------------------------------------- vocabulary
def test_vocabulary_fit_transform_on_a_train_split(ptc):
    labels = [g.label for g in ptc]
    train, test = stratified_kfold(labels, k=10, seed=0)[0]
    train_graphs = [ptc[i] for i in train]
    vocab = PatternVocabulary(max_size=2, min_count=3).fit(train_graphs)
    pats = vocab.patterns
    assert len(vocab) == len(pats) > 50
    assert list(pats) == sorted(pats, key=Pattern.sort_key)
    # min_count on training occurrences, exactly
    totals = Counter()
    for g in train_graphs:
        totals.update(_counts(enumerate_patterns(g, 2)))
    assert set(pats) == {p for p, c in totals.items() if c >= 3}
    # order does not depend on the order of the training graphs
    assert PatternVocabulary(2, 3).fit(train_graphs[::-1]).patterns == pats
    x = vocab.transform([ptc[i] for i in test])
    assert x.shape == (len(test), len(vocab)) and x.dtype == np.float32
    for row, i in zip(x, test):
        occ = vocab.occurrences(ptc[i])
        np.testing.assert_array_equal(row, [len(o) for o in occ])
        want = _counts(enumerate_patterns(ptc[i], 2))
        assert all(row[vocab.index(p)] == c for p, c in want.items() if p in vocab)
    # the C atom count column is the number of carbons
    c_col = vocab.index(Pattern("atom", (C,)))
    np.testing.assert_array_equal(x[:, c_col], [np.sum(ptc[i].node_labels == C) for i in test])


def test_vocabulary_by_graphs_and_errors(ptc):
    by_occ = PatternVocabulary(1, min_count=20).fit(ptc)
    by_graph = PatternVocabulary(1, min_count=20, by="graphs").fit(ptc)
    in_graphs = Counter(p for g in ptc for p in enumerate_patterns(g, 1))
    assert set(by_graph.patterns) == {p for p, c in in_graphs.items() if c >= 20}
    assert set(by_graph.patterns) < set(by_occ.patterns)  # a graph count never exceeds occurrences
    assert by_occ.names({C: "C"})[by_occ.index(Pattern("atom", (C,)))] == "C"
    with pytest.raises(ValueError, match="call fit"):
        PatternVocabulary().transform(ptc[:2])
    with pytest.raises(ValueError, match="min_count"):
        PatternVocabulary(min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        PatternVocabulary(max_size=5)
    with pytest.raises(ValueError, match="no pattern is seen"):
        PatternVocabulary(min_count=10**6).fit(ptc[:3])
    with pytest.raises(ValueError, match="no graphs"):
        PatternVocabulary().fit([])


# -------------------------------------------------------------------------- atom scores
def test_atom_scores_hand_made():
    g = _graph([C, C, O], [(0, 1, SINGLE), (1, 2, DOUBLE)])  # C-C=O
    vocab = PatternVocabulary(max_size=2).fit([g, _graph([N], [])])
    names = vocab.names({C: "C", O: "O", N: "N"}, {1: "double", 2: "single"})
    assert names == ["O", "O=C", "O=C-C", "N", "C", "C-C"]  # sorted atoms: (2,), (2,5), (2,5,5), (3,), (5,), (5,5)
    s = np.array([6.0, 4.0, 3.0, 100.0, 2.0, 8.0])  # one score per name above
    got = vocab.atom_scores(g, s)
    # O: 6 (alone) + 4/2 (O=C) + 3/3 (O=C-C) = 9
    # C1 (middle): 2/2/1 (one of the 2 C atoms) + 4/2 + 3/3 + 8/2 = 1 + 2 + 1 + 4 = 8
    # C0 (end):    1 + 1 + 4 = 6; N is absent, so its 100 goes nowhere
    np.testing.assert_allclose(got, [6.0, 8.0, 9.0])
    assert got.sum() == pytest.approx(s.sum() - 100.0)


def test_atom_scores_sum_to_present_pattern_scores(ptc):
    vocab = PatternVocabulary(max_size=3, min_count=2).fit(ptc)
    rng = np.random.default_rng(1)
    for g in ptc[::17]:
        s = rng.normal(size=len(vocab))
        occ = vocab.occurrences(g)
        present = np.array([len(o) > 0 for o in occ])
        per_atom = vocab.atom_scores(g, s)
        assert per_atom.shape == (g.num_nodes,)
        assert per_atom.sum() == pytest.approx(s[present].sum(), abs=1e-9)
        assert np.all(vocab.atom_scores(g, np.where(present, 0.0, 1e3)) == 0.0)


def test_atom_scores_bad_input():
    vocab = PatternVocabulary(1).fit([_graph([C, O], [(0, 1, SINGLE)])])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        vocab.atom_scores(_graph([C], []), np.zeros(4))
    with pytest.raises(ValueError, match="outside 0..1"):
        atom_scores([[(0, 2)]], np.ones(1), num_atoms=2)


# ---------------------------------------------------------------------------- k-fold
def test_stratified_kfold_partitions_and_balances(ptc):
    labels = np.array([g.label for g in ptc])
    folds = stratified_kfold(labels, k=10, seed=3)
    assert len(folds) == 10
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(344))  # test folds partition the data
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 344
        assert len(test) in (34, 35)
        assert np.sum(labels[test] == 1) in (15, 16)  # 152 positives over 10 folds
        assert np.sum(labels[test] == -1) in (19, 20)  # 192 negatives
    again = stratified_kfold(labels, k=10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = stratified_kfold(labels, k=10, seed=4)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_stratified_kfold_errors():
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        stratified_kfold([0, 1, 0, 1], k=1)
    with pytest.raises(ValueError, match="at least 5 examples"):
        stratified_kfold([0, 1, 0, 1], k=5)
    with pytest.raises(ValueError, match="1-D"):
        stratified_kfold(np.zeros((4, 2)), k=2)
