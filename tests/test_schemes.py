import pytest

from sharp_fpn.schemes import SCHEMES, Edge, build_scheme, canonical_name


@pytest.mark.parametrize("alias,name", [("++", "nested"), ("+++", "full_scale"), ("#", "sharp"),
                                        ("Plain", "plain"), ("fullscale", "full_scale")])
def test_paper_symbols_are_aliases(alias, name):
    assert canonical_name(alias) == name


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown skip scheme 'x'; valid: plain .*sharp \(#, unet#\)"):
        build_scheme("x", 4)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("levels", [2, 4, 5])
def test_inputs_are_computed_before_use_and_outputs_exist(name, levels):
    scheme = build_scheme(name, levels)
    ready = {(i, 0) for i in range(levels)}
    for node, edges in scheme.inputs.items():
        i, j = node
        assert j >= 1 and i + j <= levels - 1
        for e in edges:
            assert e.src in ready, f"{name}: X{node} uses X{e.src} before it exists"
            assert e.src[0] - i == e.scale  # resampling brings the source to row i's scale
        ready.add(node)
    assert scheme.outputs == [scheme.output(i) for i in range(levels)]
    assert all(o in ready for o in scheme.outputs)


def test_plain_is_fpn_top_down():
    s = build_scheme("plain", 4)
    assert s.inputs == {
        (2, 1): (Edge((2, 0)), Edge((3, 0), 1)),
        (1, 2): (Edge((1, 0)), Edge((2, 1), 1)),
        (0, 3): (Edge((0, 0)), Edge((1, 2), 1)),
    }
    assert s.outputs == [(0, 3), (1, 2), (2, 1), (3, 0)]


def test_nested_node_count_and_dense_inputs():
    s = build_scheme("nested", 5)
    assert len(s.inputs) == 10  # the UNet++ grid: 4 + 3 + 2 + 1 nodes
    assert s.inputs[(0, 4)] == tuple(Edge((0, k)) for k in range(4)) + (Edge((1, 3), 1),)


def test_full_scale_reads_every_scale():
    s = build_scheme("full_scale", 5)
    assert list(s.inputs) == [(3, 1), (2, 2), (1, 3), (0, 4)]
    edges = s.inputs[(1, 3)]
    assert [e.src for e in edges] == [(0, 0), (1, 0), (2, 2), (3, 1), (4, 0)]
    assert [e.scale for e in edges] == [-1, 0, 1, 2, 3]
    assert all(e.branch for e in edges)


def test_sharp_matches_eq1_examples():
    """The paper's own examples (Sec. 2.1): X(0,2) and the final decoder X(0,4)."""
    s = build_scheme("#", 5)
    assert set(s.inputs[(0, 2)]) == {
        Edge((0, 0)), Edge((0, 1)), Edge((1, 1), 1), Edge((2, 0), 2, branch=True)}
    assert set(s.inputs[(0, 4)]) == {
        Edge((0, 0)), Edge((0, 1)), Edge((0, 2)), Edge((0, 3)), Edge((1, 3), 1),
        Edge((4, 0), 4, branch=True), Edge((3, 1), 3, branch=True), Edge((2, 2), 2, branch=True)}
    assert s.inputs[(2, 1)] == build_scheme("++", 5).inputs[(2, 1)]  # J = 1 has no full-scale term
