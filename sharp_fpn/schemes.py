"""The four skip schemes of the UNet# paper as data: which grid nodes exist and what feeds each.

The grid has rows i = 0..L-1 (scales, 0 finest) and columns j. Column 0 is the encoder,
X(i, 0). A node X(i, j) with j >= 1 may exist where i + j <= L-1, and the output of row i is
its last node X(i, L-1-i). A scheme only says *which* nodes exist and *which* edges feed
them; the FPN neck and the UNet decoder that walk it choose widths, blocks and fusion.

An edge carries a source node, a resampling exponent ``scale`` (+n: upsample by 2**n,
-n: downsample by 2**n, 0: same scale) and whether it is a *branch*: a full-scale skip that
gets its own small conv ("g" in the design, f(.) inside Eq. 1's full-scale term) before
fusion. Non-branch edges are used as they are (dense skips, the 2x upsampling from below).
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

Node = Tuple[int, int]

# Paper symbols accepted as aliases of the canonical names.
ALIASES = {
    "plain": "plain",
    "fpn": "plain",
    "unet": "plain",
    "nested": "nested",
    "++": "nested",
    "unet++": "nested",
    "full_scale": "full_scale",
    "fullscale": "full_scale",
    "+++": "full_scale",
    "unet3+": "full_scale",
    "sharp": "sharp",
    "#": "sharp",
    "unet#": "sharp",
}
SCHEMES = ("plain", "nested", "full_scale", "sharp")


@dataclass(frozen=True)
class Edge:
    src: Node
    scale: int = 0  # log2 of the resampling factor: > 0 upsample, < 0 downsample
    branch: bool = False  # full-scale skip with its own conv before fusion


@dataclass(frozen=True)
class SkipScheme:
    """A skip scheme on an L-row grid: ``nodes`` in computation order, ``inputs`` per node."""

    name: str
    levels: int
    inputs: Dict[Node, Tuple[Edge, ...]]

    @property
    def nodes(self) -> List[Node]:
        """Decoder nodes (column >= 1) in an order where every input is ready."""
        return list(self.inputs)

    def output(self, row: int) -> Node:
        """The node whose feature map is the output of ``row``."""
        last = (row, self.levels - 1 - row)
        return last if last in self.inputs else (row, 0)  # the deepest row is the encoder

    @property
    def outputs(self) -> List[Node]:
        return [self.output(i) for i in range(self.levels)]

    def __str__(self) -> str:
        lines = [f"{self.name} (L={self.levels})"]
        for node, edges in self.inputs.items():
            srcs = ", ".join(_edge_str(e) for e in edges)
            lines.append(f"  X{node} <- {srcs}")
        return "\n".join(lines)


def _edge_str(e: Edge) -> str:
    s = f"X{e.src}"
    if e.scale > 0:
        s = f"up{2 ** e.scale}({s})"
    elif e.scale < 0:
        s = f"down{2 ** -e.scale}({s})"
    return f"g({s})" if e.branch else s


def canonical_name(name: str) -> str:
    """Map a scheme name or paper symbol ("++", "+++", "#") to its canonical name."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        valid = "; ".join(
            f"{c} ({', '.join(a for a, t in ALIASES.items() if t == c and a != c)})" for c in SCHEMES
        )
        raise ValueError(f"Unknown skip scheme {name!r}; valid: {valid}")
    return ALIASES[key]


def build_scheme(name: str, levels: int) -> SkipScheme:
    """The skip scheme ``name`` (any alias) on a grid of ``levels`` rows."""
    if levels < 2:
        raise ValueError(f"A skip scheme needs at least 2 levels, got {levels}")
    name = canonical_name(name)
    return SkipScheme(name, levels, _BUILDERS[name](levels))


def _plain(L: int) -> Dict[Node, Tuple[Edge, ...]]:
    # FPN / UNet: row i's output = X(i,0) merged with the upsampled output of row i+1.
    inputs: Dict[Node, Tuple[Edge, ...]] = {}
    below: Node = (L - 1, 0)
    for i in range(L - 2, -1, -1):
        node = (i, L - 1 - i)
        inputs[node] = (Edge((i, 0)), Edge(below, scale=1))
        below = node
    return inputs


def _nested(L: int) -> Dict[Node, Tuple[Edge, ...]]:
    # UNet++: X(i,j) = f([X(i,0..j-1), up(X(i+1,j-1))]), computed column by column.
    inputs: Dict[Node, Tuple[Edge, ...]] = {}
    for j in range(1, L):
        for i in range(L - j - 1, -1, -1):
            dense = tuple(Edge((i, k)) for k in range(j))
            inputs[(i, j)] = dense + (Edge((i + 1, j - 1), scale=1),)
    return inputs


def _full_scale(L: int) -> Dict[Node, Tuple[Edge, ...]]:
    # UNet 3+: D(i) = f([g(down X(k,0)) k < i, g(X(i,0)), g(up D(k)) k > i]); D(L-1) = X(L-1,0).
    inputs: Dict[Node, Tuple[Edge, ...]] = {}
    decoder = {L - 1: (L - 1, 0)}
    for i in range(L - 2, -1, -1):
        edges = [Edge((k, 0), scale=k - i, branch=True) for k in range(i)]
        edges.append(Edge((i, 0), branch=True))
        edges += [Edge(decoder[k], scale=k - i, branch=True) for k in range(i + 1, L)]
        node = (i, L - 1 - i)
        inputs[node] = tuple(edges)
        decoder[i] = node
    return inputs


def _sharp(L: int) -> Dict[Node, Tuple[Edge, ...]]:
    # UNet# (Eq. 1): nested, plus for J >= 2 the full-scale terms f(u^(J-j)(X(I+J-j, j))),
    # j = 0..J-2: the deeper nodes on the same anti-diagonal.
    inputs = _nested(L)
    for (i, j), edges in inputs.items():
        full = tuple(Edge((i + j - k, k), scale=j - k, branch=True) for k in range(j - 1))
        inputs[(i, j)] = edges + full
    return inputs


_BUILDERS = {"plain": _plain, "nested": _nested, "full_scale": _full_scale, "sharp": _sharp}
