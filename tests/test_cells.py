"""The cells against torch's own modules and against transcriptions of DESIGN.md's equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evolstm.network import cells

DT = torch.float64
FLAT_IN, HIDDEN, BATCH = 3, 5, 4
MAP_IN = (2, 4, 5)  # channels, height, width (not square, so height/width mix-ups show)


def input_size(cell: str):
    return MAP_IN if cell == "conv_peephole" else FLAT_IN


def random_params(cell, in_size, hidden, seed, *, kernel_size=3):
    """init_params, with random biases too so that no parameter is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    params = cells.init_params(
        cell, in_size, hidden, generator=gen, kernel_size=kernel_size, dtype=DT
    )
    for name, value in params.items():
        if name.startswith("b"):
            params[name] = value + 0.3 * torch.randn(value.shape, generator=gen, dtype=DT)
    return params


def random_inputs(cell, batch_shape, steps, seed, in_size=None):
    in_size = input_size(cell) if in_size is None else in_size
    shape = (*batch_shape, *(in_size if isinstance(in_size, tuple) else (in_size,)))
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=DT) for _ in range(steps)]


def stack_layers(cell, layers, seed):
    params, in_size = [], input_size(cell)
    for layer in range(layers):
        params.append(random_params(cell, in_size, HIDDEN, seed + layer))
        in_size = cells.output_size(cell, in_size, HIDDEN)
    return params


def unroll(cell, layers, xs, batch_shape, **kw):
    states = [
        cells.zero_state(
            cell,
            batch_shape,
            input_size(cell) if i == 0 else cells.output_size(cell, input_size(cell), HIDDEN),
            HIDDEN,
            dtype=DT,
        )
        for i in range(len(layers))
    ]
    outputs = []
    for x in xs:
        y, states = cells.stack_step(cell, layers, x, states, **kw)
        outputs.append(y)
    return torch.stack(outputs), states


# --- torch references ----------------------------------------------------------------------


def test_lstm_matches_torch_lstmcell():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(FLAT_IN, HIDDEN, dtype=DT)
    params = {
        "W": torch.cat([ref.weight_ih.T, ref.weight_hh.T]).detach(),
        "b": (ref.bias_ih + ref.bias_hh).detach(),
    }
    state = cells.zero_state("lstm", (BATCH,), FLAT_IN, HIDDEN, dtype=DT)
    h_ref = c_ref = torch.zeros(BATCH, HIDDEN, dtype=DT)
    with torch.no_grad():
        for x in random_inputs("lstm", (BATCH,), 8, seed=1):
            h, state = cells.layer_step("lstm", params, x, state)
            h_ref, c_ref = ref(x, (h_ref, c_ref))
            torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
            torch.testing.assert_close(state[1], c_ref, atol=1e-6, rtol=0)
    assert h_ref.abs().max() > 0.05  # the unroll exercised the cell


def test_gru_matches_torch_grucell():
    torch.manual_seed(0)
    ref = torch.nn.GRUCell(FLAT_IN, HIDDEN, dtype=DT)
    params = {
        "W": ref.weight_ih.T.detach(),
        "U": ref.weight_hh.T.detach(),
        "b_W": ref.bias_ih.detach(),
        "b_U": ref.bias_hh.detach(),
    }
    state = cells.zero_state("gru", (BATCH,), FLAT_IN, HIDDEN, dtype=DT)
    h_ref = torch.zeros(BATCH, HIDDEN, dtype=DT)
    with torch.no_grad():
        for x in random_inputs("gru", (BATCH,), 8, seed=1):
            h, state = cells.layer_step("gru", params, x, state)
            h_ref = ref(x, h_ref)
            torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
    assert len(state) == 1
    assert h_ref.abs().max() > 0.05


@pytest.mark.parametrize(("cell", "torch_rnn"), [("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_stack_matches_multilayer_torch_rnn(cell, torch_rnn):
    torch.manual_seed(0)
    ref = torch_rnn(FLAT_IN, HIDDEN, num_layers=2, dtype=DT)
    layers = []
    for layer in range(2):
        w_ih, w_hh = getattr(ref, f"weight_ih_l{layer}"), getattr(ref, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(ref, f"bias_ih_l{layer}"), getattr(ref, f"bias_hh_l{layer}")
        if cell == "lstm":
            layers.append({"W": torch.cat([w_ih.T, w_hh.T]), "b": b_ih + b_hh})
        else:
            layers.append({"W": w_ih.T, "U": w_hh.T, "b_W": b_ih, "b_U": b_hh})
    layers = [{k: v.detach() for k, v in p.items()} for p in layers]
    xs = random_inputs(cell, (BATCH,), 6, seed=2)
    with torch.no_grad():
        ys, states = unroll(cell, layers, xs, (BATCH,))
        ys_ref, h_n = ref(torch.stack(xs))
    torch.testing.assert_close(ys, ys_ref, atol=1e-6, rtol=0)
    h_n = h_n[0] if cell == "lstm" else h_n
    torch.testing.assert_close(torch.stack([s[0] for s in states]), h_n, atol=1e-6, rtol=0)


# --- equation-by-equation transcriptions ----------------------------------------------------


def peephole_reference(W, U, b, xs, sigma_h):
    """DESIGN.md's peephole LSTM, one gate at a time. W[g]: [H, in], U[g]: [H, H], b[g]: [H]."""
    sigmoid = torch.sigmoid
    h = c = torch.zeros(xs[0].shape[0], b["f"].shape[0], dtype=DT)
    hs = []
    for x in xs:
        pre = {}
        for gate in ("f", "i", "o"):
            pre[gate] = x @ W[gate].T + c @ U[gate].T + b[gate]
        f, i, o = sigmoid(pre["f"]), sigmoid(pre["i"]), sigmoid(pre["o"])
        c = f * c + i * torch.tanh(x @ W["c"].T + b["c"])
        h = o * sigma_h(c)
        hs.append(h)
    return hs, c


@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_peephole_matches_transcription(activation):
    gen = torch.Generator().manual_seed(3)
    H = HIDDEN

    def draw(*shape):
        return torch.randn(shape, generator=gen, dtype=DT) * 0.5

    W = {g: draw(H, FLAT_IN) for g in "ifco"}
    U = {g: draw(H, H) for g in "ifo"}
    b = {g: draw(H) for g in "ifco"}
    params = {
        "W": torch.cat([W[g].T for g in "ifco"], dim=1),
        "U": torch.cat([U[g].T for g in "ifo"], dim=1),
        "b": torch.cat([b[g] for g in "ifco"]),
    }
    xs = random_inputs("peephole", (BATCH,), 6, seed=4)
    sigma_h = torch.tanh if activation == "tanh" else (lambda c: c)
    hs_ref, c_ref = peephole_reference(W, U, b, xs, sigma_h)
    state = cells.zero_state("peephole", (BATCH,), FLAT_IN, H, dtype=DT)
    for x, h_ref in zip(xs, hs_ref, strict=True):
        h, state = cells.layer_step(
            "peephole", params, x, state, peephole_output_activation=activation
        )
        torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(state[1], c_ref, atol=1e-12, rtol=0)


def conv_peephole_reference(W, U, V, b, xs, sigma_h):
    """DESIGN.md's conv peephole LSTM with one conv2d per gate.

    W[g]: [H, C, k, k], U[g]: [H, H, k, k], V[g]: [H, ht, wd], b[g]: [H].
    """
    B, _, ht, wd = xs[0].shape
    H, k = b["f"].shape[0], W["f"].shape[-1]
    h = c = torch.zeros(B, H, ht, wd, dtype=DT)
    hs = []

    def conv(gate, x, h):
        return F.conv2d(x, W[gate], b[gate], padding=k // 2) + F.conv2d(h, U[gate], padding=k // 2)

    for x in xs:
        f = torch.sigmoid(conv("f", x, h) + V["f"] * c)
        i = torch.sigmoid(conv("i", x, h) + V["i"] * c)
        c_new = f * c + i * torch.tanh(conv("c", x, h))
        o = torch.sigmoid(conv("o", x, h) + V["o"] * c_new)
        h, c = o * sigma_h(c_new), c_new
        hs.append(h)
    return hs, c


@pytest.mark.parametrize(("kernel_size", "activation"), [(3, "tanh"), (5, "identity")])
def test_conv_peephole_matches_transcription(kernel_size, activation):
    gen = torch.Generator().manual_seed(5)
    H, (C, ht, wd), k = HIDDEN, MAP_IN, kernel_size

    def draw(*shape):
        return torch.randn(shape, generator=gen, dtype=DT) * 0.3

    W = {g: draw(H, C, k, k) for g in "ifco"}
    U = {g: draw(H, H, k, k) for g in "ifco"}
    V = {g: draw(H, ht, wd) for g in "ifo"}
    b = {g: draw(H) for g in "ifco"}
    params = {
        "W": torch.cat([W[g] for g in "ifco"]),
        "U": torch.cat([U[g] for g in "ifco"]),
        "V": torch.stack([V[g] for g in "ifo"]),
        "b": torch.cat([b[g] for g in "ifco"]),
    }
    shapes = cells.param_shapes("conv_peephole", MAP_IN, H, kernel_size=k)
    assert {n: tuple(p.shape) for n, p in params.items()} == shapes
    xs = random_inputs("conv_peephole", (BATCH,), 4, seed=6)
    sigma_h = torch.tanh if activation == "tanh" else (lambda c: c)
    hs_ref, c_ref = conv_peephole_reference(W, U, V, b, xs, sigma_h)
    state = cells.zero_state("conv_peephole", (BATCH,), MAP_IN, H, dtype=DT)
    for x, h_ref in zip(xs, hs_ref, strict=True):
        h, state = cells.layer_step(
            "conv_peephole", params, x, state, peephole_output_activation=activation
        )
        torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(state[1], c_ref, atol=1e-10, rtol=0)


# --- population path, gradients, stacking ---------------------------------------------------


@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_population_matches_loop_over_individuals(cell):
    P, steps = 3, 4
    members = [stack_layers(cell, 2, seed=10 * m) for m in range(P)]
    population = [
        {name: torch.stack([m[layer][name] for m in members]) for name in members[0][layer]}
        for layer in range(2)
    ]
    xs = random_inputs(cell, (P, BATCH), steps, seed=7)
    ys, states = unroll(cell, population, xs, (P, BATCH))
    assert ys.shape[:3] == (steps, P, BATCH)
    for m in range(P):
        ys_m, states_m = unroll(cell, members[m], [x[m] for x in xs], (BATCH,))
        torch.testing.assert_close(ys[:, m], ys_m, atol=1e-12, rtol=0)
        for layer_state, layer_state_m in zip(states, states_m, strict=True):
            for s, s_m in zip(layer_state, layer_state_m, strict=True):
                torch.testing.assert_close(s[m], s_m, atol=1e-12, rtol=0)


@pytest.mark.parametrize("population", [False, True], ids=["single", "population"])
@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_gradcheck_through_unroll(cell, population):
    hidden, in_size = 2, ((1, 2, 3) if cell == "conv_peephole" else 2)
    batch_shape = (2, 2) if population else (2,)
    names, tensors, n_layers = [], [], 2
    size = in_size
    gen = torch.Generator().manual_seed(8)
    for layer in range(n_layers):
        for name, shape in cells.param_shapes(cell, size, hidden).items():
            full = batch_shape[:1] + shape if population else shape
            names.append((layer, name))
            tensors.append(torch.randn(full, generator=gen, dtype=DT).requires_grad_())
        size = cells.output_size(cell, size, hidden)
    x_shape = (*batch_shape, *(in_size if isinstance(in_size, tuple) else (in_size,)))
    xs = torch.randn((3, *x_shape), generator=gen, dtype=DT, requires_grad=True)

    def run(xs, *flat):
        layers = [{} for _ in range(n_layers)]
        for (layer, name), value in zip(names, flat, strict=True):
            layers[layer][name] = value
        states = [
            cells.zero_state(cell, batch_shape, in_size if i == 0 else size, hidden, dtype=DT)
            for i in range(n_layers)
        ]
        outputs = []
        for x in xs:
            y, states = cells.stack_step(cell, layers, x, states)
            outputs.append(y)
        return torch.stack(outputs), *states[-1]

    # fast_mode checks random projections of the Jacobian: the conv cell has ~1k inputs here.
    assert torch.autograd.gradcheck(run, (xs, *tensors), fast_mode=cell == "conv_peephole")


@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_stack_feeds_each_layer_the_previous_h(cell):
    layers = stack_layers(cell, 2, seed=20)
    xs = random_inputs(cell, (BATCH,), 3, seed=9)
    ys, _ = unroll(cell, layers, xs, (BATCH,))
    s0 = cells.zero_state(cell, (BATCH,), input_size(cell), HIDDEN, dtype=DT)
    s1 = cells.zero_state(
        cell, (BATCH,), cells.output_size(cell, input_size(cell), HIDDEN), HIDDEN, dtype=DT
    )
    for x, y in zip(xs, ys, strict=True):
        h0, s0 = cells.layer_step(cell, layers[0], x, s0)
        h1, s1 = cells.layer_step(cell, layers[1], h0, s1)
        torch.testing.assert_close(y, h1, atol=0, rtol=0)
    with pytest.raises(ValueError, match="2 layers but 1 states"):
        cells.stack_step(cell, layers, xs[0], [s0])


# --- state reset ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_reset_state_zeroes_exactly_the_started_episodes(cell):
    P = 2
    layers = [
        {n: v.expand(P, *v.shape).clone() for n, v in p.items()} for p in stack_layers(cell, 2, 30)
    ]
    xs = random_inputs(cell, (P, BATCH), 3, seed=10)
    _, states = unroll(cell, layers, xs, (P, BATCH))
    start = torch.zeros(P, BATCH, dtype=torch.bool)
    start[0, 1] = start[1, 3] = True
    reset = cells.reset_state(states, start)
    for state, new in zip(states, reset, strict=True):
        for s, s_new in zip(state, new, strict=True):
            assert torch.all(s_new[start] == 0)
            torch.testing.assert_close(s_new[~start], s[~start], atol=0, rtol=0)
            assert torch.all(s[start] != 0)  # there was something to reset
    # A reset slot continues exactly like a fresh episode.
    x = random_inputs(cell, (P, BATCH), 1, seed=11)[0]
    y, _ = cells.stack_step(cell, layers, x, reset)
    y_fresh, _ = unroll(cell, layers, [x], (P, BATCH))
    torch.testing.assert_close(y[start], y_fresh[0][start], atol=0, rtol=0)
    assert not torch.allclose(y[~start], y_fresh[0][~start])


def test_reset_state_without_population_and_shape_check():
    h, c = torch.ones(3, 4), torch.ones(3, 4)
    [(h2, c2)] = cells.reset_state([(h, c)], torch.tensor([False, True, False]))
    assert h2[1].eq(0).all() and c2[1].eq(0).all() and h2[[0, 2]].eq(1).all()
    assert h.eq(1).all()  # the input state is not modified in place
    with pytest.raises(ValueError, match="does not lead state"):
        cells.reset_state([(h, c)], torch.zeros(4, dtype=torch.bool))


# --- parameter layout ----------------------------------------------------------------------


@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_unit_slices_partition_every_parameter(cell):
    shapes = cells.param_shapes(cell, input_size(cell), HIDDEN)
    counts = {name: torch.zeros(shape, dtype=torch.int64) for name, shape in shapes.items()}
    units = cells.unit_slices(cell, input_size(cell), HIDDEN)
    assert len(units) == HIDDEN
    for unit in units:
        assert set(unit) == set(shapes)
        for name, idx in unit.items():
            counts[name][idx] += 1
    # No entry is shared by no unit or by two units: each belongs to exactly one.
    for name, count in counts.items():
        assert torch.all(count == 1), name


@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_unit_slice_owns_its_unit_output(cell):
    """Changing unit j's parameters changes only unit j's h and c after one step."""
    params = random_params(cell, input_size(cell), HIDDEN, seed=40)
    x = random_inputs(cell, (BATCH,), 1, seed=12)[0]
    state = tuple(
        torch.randn_like(s)
        for s in cells.zero_state(cell, (BATCH,), input_size(cell), HIDDEN, dtype=DT)
    )
    _, before = cells.layer_step(cell, params, x, state)
    j = 2
    changed = {n: v.clone() for n, v in params.items()}
    for name, idx in cells.unit_slices(cell, input_size(cell), HIDDEN)[j].items():
        changed[name][idx] += 0.5
    _, after = cells.layer_step(cell, changed, x, state)
    others = [k for k in range(HIDDEN) if k != j]
    for s, s_new in zip(before, after, strict=True):
        torch.testing.assert_close(s_new[:, others], s[:, others], atol=0, rtol=0)
        assert not torch.allclose(s_new[:, j], s[:, j])


@pytest.mark.parametrize("cell", cells.CELL_NAMES)
def test_init_params(cell):
    shapes = cells.param_shapes(cell, input_size(cell), HIDDEN)
    a = cells.init_params(
        cell, input_size(cell), HIDDEN, generator=torch.Generator().manual_seed(0)
    )
    b = cells.init_params(
        cell, input_size(cell), HIDDEN, generator=torch.Generator().manual_seed(0)
    )
    c = cells.init_params(
        cell, input_size(cell), HIDDEN, generator=torch.Generator().manual_seed(1)
    )
    assert list(a) == list(shapes)
    bound = HIDDEN**-0.5
    for name, value in a.items():
        assert tuple(value.shape) == shapes[name] and value.dtype == torch.float32
        torch.testing.assert_close(value, b[name], atol=0, rtol=0)
        if name.startswith("b"):
            expected = torch.zeros(shapes[name])
            if cell != "gru":
                expected[HIDDEN : 2 * HIDDEN] = 1.0  # forget gate (order i, f, g, o)
            torch.testing.assert_close(value, expected, atol=0, rtol=0)
        else:
            assert value.abs().max() <= bound and value.abs().max() > 0.8 * bound
            assert not torch.equal(value, c[name])


def test_zero_state_and_output_size():
    h, c = cells.zero_state("lstm", (7, 3), 2, 16)
    assert h.shape == c.shape == (7, 3, 16) and not h.any()
    assert h.data_ptr() != c.data_ptr()
    (h,) = cells.zero_state("gru", (3,), 2, 16, dtype=DT)
    assert h.shape == (3, 16) and h.dtype == DT
    h, c = cells.zero_state("conv_peephole", (7, 3), (2, 4, 5), 6)
    assert h.shape == c.shape == (7, 3, 6, 4, 5)
    assert cells.output_size("peephole", 2, 16) == 16
    assert cells.output_size("conv_peephole", (2, 4, 5), 6) == (6, 4, 5)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: cells.param_shapes("lstmm", 2, 4),
        lambda: cells.init_params("lstmm", 2, 4, generator=torch.Generator()),
        lambda: cells.zero_state("lstmm", (1,), 2, 4),
        lambda: cells.output_size("lstmm", 2, 4),
        lambda: cells.unit_slices("lstmm", 2, 4),
        lambda: cells.layer_step("lstmm", {}, torch.zeros(1, 2), (torch.zeros(1, 4),)),
    ],
)
def test_bad_cell_name(call):
    with pytest.raises(ValueError, match=r"'lstmm'.*lstm, peephole, conv_peephole, gru"):
        call()


def test_bad_sizes_and_options():
    with pytest.raises(ValueError, match="channels, height, width"):
        cells.param_shapes("conv_peephole", 3, 4)
    with pytest.raises(ValueError, match="positive int input size"):
        cells.param_shapes("lstm", (1, 2, 3), 4)
    with pytest.raises(ValueError, match="odd"):
        cells.param_shapes("conv_peephole", (1, 2, 3), 4, kernel_size=4)
    params = cells.init_params("peephole", 2, 3, generator=torch.Generator())
    state = cells.zero_state("peephole", (1,), 2, 3)
    with pytest.raises(ValueError, match=r"'relu'.*tanh, identity"):
        cells.layer_step(
            "peephole", params, torch.zeros(1, 2), state, peephole_output_activation="relu"
        )
    params = cells.init_params("lstm", 2, 3, generator=torch.Generator())
    with pytest.raises(ValueError, match="only to the peephole cells"):
        cells.layer_step(
            "lstm", params, torch.zeros(1, 2), state, peephole_output_activation="identity"
        )
