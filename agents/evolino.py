"""Evolino: ESP evolves the LSTM cells, the linear readout is computed.

D. Wierstra, F. Gomez and J. Schmidhuber, "Modeling systems with internal state using
Evolino", GECCO 2005 (and IJCAI 2005); J. Schmidhuber, D. Wierstra, M. Gagliolo and
F. Gomez, "Training recurrent networks by Evolino", Neural Computation 19(3), 2007.

**Where the training data comes from.** A sequence task is a gymnasium env
(:class:`envs.sequence_env.SequenceEnv`, registered as ``evolstm/Sines-v0``,
``evolstm/MackeyGlass-v0``, ``evolstm/AnBnCn-v0``) that carries its dataset as
``env.dataset`` (:class:`envs.sequences.SequenceDataset`). Evolino builds one env through the
trainer's env factory (``ctx.make_vector_env(1)``) and reads the dataset from it, so a
sequence task is a config like any other, and the trainer's held-out evaluation, ``evolstm
eval`` and the task's success test (the free-running test error) run the saved policy as an
ordinary episode. Any env with a ``dataset`` attribute of that type works.

**One generation** (ESP's assembly, credit and recombination, :mod:`agents.esp`; a chromosome
is a cell's incoming weights only, since the readout is not evolved):

1. All ``N`` assembled networks run teacher-forced over the training sequences as one batch
   (``[N, B, I]``, B = independent training sequences); the first ``washout`` steps are
   discarded and the last layer's outputs on the training steps are collected:
   ``Phi [N, M, F]`` (M scored steps).
2. The readout ``[W; b] = argmin ||[Phi 1] [W; b] - D||^2 + ridge * M * ||[W; b]||^2`` is
   solved for every network at once: Cholesky on the ridge normal equations (``solver:
   ridge``; FIELD-NOTES measured it about twice as fast as ``torch.linalg.lstsq`` for
   P=256, T=1000, H=64), or ``torch.linalg.lstsq`` (``solver: lstsq``, the plain
   pseudo-inverse solution). It is written into the network's ``readout.W``/``readout.b``.
3. Fitness (maximised) is minus the mean squared error of a **free-running** pass: time
   series run ``fitness_windows`` windows of the training steps in one batch, each
   teacher-forced for ``washout`` steps from the zero state (``fitness_state: washout``) or
   starting from the state that step 1's teacher-forced pass reached at the window's first
   step (``fitness_state: training``: every earlier training step seen, as for the readout's
   features and as in a test after a long teacher-forced stretch), and then fed back its own
   prediction for ``fitness_horizon`` steps. a^n b^n c^n has no feedback (the inputs are
   the strings), so its fitness is the error on the training strings.

With ``elite``, each generation after the first also evaluates the best network so far
(rebuilt from its chromosomes), so those chromosomes keep the credit of the best network
instead of only that of the random assemblies they joined (an addition of ours, not from the
papers; see BENCHMARKS.md, "Evolino, fifth pass").

The networks are evaluated in-process (not on Ray shards): a generation is a few batched
tensor passes over one dataset, with no env to step.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pydantic
import torch

from agents.esp import ESP, ESPOptions
from evolstm.agent import AgentContext
from evolstm.errors import ConfigError
from evolstm.network.layout import unflatten
from evolstm.network.obs_norm import ObsNormalizer
from evolstm.network.policy import RecurrentCore
from evolstm.rollouts.evaluation import single_torch_thread


class EvolinoOptions(ESPOptions):
    """Evolino's options: ESP's, plus the readout solve and the free-running fitness."""

    solver: Literal["ridge", "lstsq"] = pydantic.Field(
        "ridge", description="readout solve: ridge (Cholesky normal equations) or lstsq"
    )
    ridge: float = pydantic.Field(
        1e-6, ge=0, description="ridge penalty per scored step of the readout solve"
    )
    fitness_windows: int = pydantic.Field(
        4, ge=1, description="free-running windows of the training steps the fitness averages"
    )
    fitness_horizon: int | None = pydantic.Field(
        None, ge=1, description="free-running steps per window (None: the task's test length)"
    )
    fitness_state: Literal["washout", "training"] = pydantic.Field(
        "washout",
        description="where a free-running fitness window's state comes from: 'washout' "
        "(teacher-forced for the dataset's washout steps from the zero state) or 'training' "
        "(the teacher-forced training pass's state at the window's first step, the state the "
        "readout was fitted on; costs only the free-running steps)",
    )
    elite: bool = pydantic.Field(
        False,
        description="every generation also evaluates the best network so far, assembled from "
        "its chromosomes (one extra network), so they keep their credit and survive (its "
        "re-evaluation can differ from the stored best by float32 round-off and then counts "
        "as an improvement, delaying bursts; measured worse at 80 cells, BENCHMARKS.md)",
    )
    input_scale: float | None = pydantic.Field(
        None,
        gt=0,
        description="time series: feed the network (x - mean) / std * input_scale, mean/std of "
        "the training inputs, also when its prediction is fed back (saved with the policy as "
        "its observation normaliser); None: raw inputs",
    )


def solve_readout(
    features: torch.Tensor, targets: torch.Tensor, *, ridge: float = 0.0, solver: str = "ridge"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares linear readout with bias, batched or not.

    :param features: ``[N, M, F]`` (or ``[M, F]``) network outputs on the scored steps.
    :param targets: ``[M, O]`` (or ``[N, M, O]``) desired outputs.
    :param ridge: penalty ``ridge * M`` on the squared weights (``"ridge"`` needs > 0 when
        ``Phi^T Phi`` may be singular).
    :param solver: ``"ridge"`` (Cholesky on the normal equations; falls back to lstsq for a
        network whose matrix is not positive definite) or ``"lstsq"``.
    :return: ``W [N, F, O]`` and ``b [N, O]`` (no ``N`` for unbatched input), float32.
    """
    unbatched = features.dim() == 2
    phi = features.unsqueeze(0) if unbatched else features
    n, m, f = phi.shape
    phi = torch.cat([phi.double(), torch.ones(n, m, 1, dtype=torch.float64)], dim=2)
    d = targets.double()
    d = d.expand(n, *d.shape) if d.dim() == 2 else d
    if solver == "lstsq":
        solution = torch.linalg.lstsq(phi, d).solution
    else:
        gram = phi.transpose(1, 2) @ phi
        gram = gram + ridge * m * torch.eye(f + 1, dtype=torch.float64)
        rhs = phi.transpose(1, 2) @ d
        chol, info = torch.linalg.cholesky_ex(gram)
        solution = torch.cholesky_solve(rhs, chol)
        bad = info != 0
        if bad.any():
            solution[bad] = torch.linalg.lstsq(phi[bad], d[bad]).solution
    solution = torch.nan_to_num(solution).float()
    w, b = solution[:, :f], solution[:, f]
    return (w[0], b[0]) if unbatched else (w, b)


def _dataset_of(ctx: AgentContext) -> Any:
    from envs.sequences import SequenceDataset

    env = ctx.make_vector_env(1)
    try:
        dataset = getattr(env, "dataset", None)
        if dataset is None and hasattr(env, "get_attr"):
            try:
                dataset = env.get_attr("dataset")[0]
            except AttributeError:
                dataset = None
    finally:
        env.close()
    if not isinstance(dataset, SequenceDataset):
        raise ConfigError(
            "agent.name 'evolino' needs a sequence task whose env has a 'dataset' "
            "(env.id: evolstm/Sines-v0, evolstm/MackeyGlass-v0 or evolstm/AnBnCn-v0)"
        )
    return dataset


class Evolino(ESP):
    """Evolino: ESP-evolved LSTM cells with a least-squares linear readout, fitness from a
    free-running pass (Schmidhuber, Wierstra, Gagliolo & Gomez 2007)."""

    Options = EvolinoOptions
    evolve_readout: ClassVar[bool] = False

    def __init__(self, options: EvolinoOptions, ctx: AgentContext) -> None:
        super().__init__(options, ctx)
        from envs.sequence_env import segments

        self.core = RecurrentCore(ctx.policy_spec)
        data = self.dataset = _dataset_of(ctx)
        self.free_running = "free-running" in str(data.metadata.get("test_mode", ""))
        inputs = torch.as_tensor(data.inputs, dtype=torch.float32)
        targets = torch.as_tensor(data.targets, dtype=torch.float32)
        self.normalizer: ObsNormalizer | None = None
        if options.input_scale is not None and self.free_running:
            # PyBrain's Evolino feeds the output back scaled by 0.001-0.01 (its
            # ``backprojectionFactor``), which keeps the cells near their linear range; here
            # the series is also centred, so the cells do not integrate its mean.
            train = inputs[data.train]
            std = train.std(dim=0).clamp_min(1e-8) / options.input_scale
            self.normalizer = ObsNormalizer(train.mean(dim=0), std, clip=1e9)
            inputs = self.normalizer(inputs)
        # Training sequences as a padded batch [B, L, I]; scored = training steps past washout.
        seqs = segments(data.sequence_starts, 0, data.train.stop)
        length = max(b - a for a, b in seqs)
        self.train_inputs = torch.zeros(len(seqs), length, inputs.shape[1])
        self.scored = torch.zeros(len(seqs), length, dtype=torch.bool)
        for i, (a, b) in enumerate(seqs):
            self.train_inputs[i, : b - a] = inputs[a:b]
            first = max(a, data.washout.stop, data.train.start)
            self.scored[i, first - a : b - a] = True
        rows = [torch.arange(a, b) for a, b in seqs]
        steps = torch.cat([r[self.scored[i, : len(r)]] for i, r in enumerate(rows)])
        self.train_targets = targets[steps]  # [M, O], in the order of scored.nonzero()
        self.inputs, self.targets = inputs, targets
        if self.free_running:
            self._plan_windows(options)

    def _plan_windows(self, o: EvolinoOptions) -> None:
        from envs.sequence_env import segments

        data = self.dataset
        washout = data.washout.stop
        horizon = o.fitness_horizon or (data.test.stop - data.test.start)
        first = max(washout, data.train.start)
        horizon = min(horizon, data.train.stop - first)
        starts = np.linspace(first, data.train.stop - horizon, o.fitness_windows)
        self.window_starts = torch.as_tensor(np.round(starts).astype(np.int64))
        self.window_washout, self.horizon = washout, horizon
        # fitness_state "training": window w starts from the training pass's state after
        # padded step capture_steps[w] of sequence capture_seqs[w] (-1: the zero state).
        self.capture_seqs = torch.zeros(len(starts), dtype=torch.long)
        self.capture_steps = torch.zeros(len(starts), dtype=torch.long)
        seqs = segments(data.sequence_starts, 0, data.train.stop)
        for w, s in enumerate(self.window_starts.tolist()):
            b = next(i for i, (a, z) in enumerate(seqs) if a <= s < z)
            self.capture_seqs[w], self.capture_steps[w] = b, s - seqs[b][0] - 1

    def assign(self) -> torch.Tensor:
        """ESP's assembly, plus (``elite``) one more network: the best so far. Each of its
        chromosomes is found in its subpopulation, or written over the last member (an
        offspring not yet evaluated) if recombination dropped it."""
        assignment = super().assign()
        o: EvolinoOptions = self.options  # type: ignore[assignment]
        if not o.elite or self.best_fitness == -float("inf"):
            return assignment
        row = torch.empty(len(self.subpops), dtype=torch.long)
        for s, best in enumerate(self.best_chromosomes):
            same = torch.nonzero((self.population[s] == best).all(dim=1)).flatten()
            if same.numel() > 0:
                row[s] = same[0]
            else:
                self.population[s][-1] = best
                row[s] = o.subpop_size - 1
        return torch.cat([assignment, row.unsqueeze(0)])

    # -- the network's forward pass, features only (the readout is what Evolino computes) ----
    def _features(self, params: dict[str, torch.Tensor], x: torch.Tensor, state: Any) -> Any:
        from evolstm.network import cells

        layers = [
            {pname: params[full] for pname, full in self.layout.layer_param_names(layer)}
            for layer in range(len(self.layout.layer_inputs))
        ]
        y, state = cells.stack_step(self.ctx.policy_spec.cell, layers, x, state)
        if self.ctx.policy_spec.cell == "conv_peephole":
            y = y.flatten(start_dim=-3)
        return y, state

    def _teacher_forced_features(
        self, params: dict[str, torch.Tensor], capture: bool = False
    ) -> tuple[torch.Tensor, Any]:
        """``Phi [N, M, F]`` on the scored training steps, and (``capture``) the state at the
        start of every fitness window (each tensor ``[N, W, H]``), else ``None``."""
        n = next(iter(params.values())).shape[0]
        b, length, _ = self.train_inputs.shape
        state = self.core.init_state((n, b))
        windows = self.core.init_state((n, len(self.window_starts))) if capture else None
        at: dict[int, list[int]] = {}
        if capture:
            for w, t in enumerate(self.capture_steps.tolist()):
                at.setdefault(t, []).append(w)
        out = []
        for t in range(length):
            x = self.train_inputs[:, t].expand(n, b, -1)
            y, state = self._features(params, x, state)
            out.append(y)
            for w in at.get(t, []):
                seq = int(self.capture_seqs[w])
                for layer, layer_state in zip(windows, state, strict=True):
                    for tensor, source in zip(layer, layer_state, strict=True):
                        tensor[:, w] = source[:, seq]
        feats = torch.stack(out, dim=2)  # [N, B, L, F]
        return feats[:, self.scored], windows  # [N, M, F] (row-major over B then L)

    def _free_running_error(
        self, params: dict[str, torch.Tensor], state: Any = None
    ) -> torch.Tensor:
        """Mean squared error ``[N]`` of the free-running windows, each teacher-forced for the
        washout steps from the zero state, or (``state`` given, tensors ``[N, W, H]``) from
        that state with no washout."""
        n = next(iter(params.values())).shape[0]
        w, b = params["readout.W"], params["readout.b"]
        starts = self.window_starts
        washout = self.window_washout if state is None else 0
        if state is None:
            state = self.core.init_state((n, len(starts)))
        squared = torch.zeros(n)
        prediction = None
        for j in range(washout + self.horizon):
            t = starts - washout + j  # [B] time index of each window
            if j <= washout or prediction is None:
                x = self.inputs[t].expand(n, -1, -1)
            elif self.normalizer is not None:
                x = self.normalizer(prediction)
            else:
                x = prediction
            y, state = self._features(params, x, state)
            prediction = torch.bmm(y, w) + b.unsqueeze(1)  # [N, B, O]
            if j >= washout:
                squared += ((prediction - self.targets[t]) ** 2).mean(dim=(1, 2))
        return squared / self.horizon

    def evaluate_networks(self, vectors: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        o: EvolinoOptions = self.options  # type: ignore[assignment]
        with torch.inference_mode(), single_torch_thread():
            vectors = vectors.clone()
            params = unflatten(self.layout, vectors)
            from_training = self.free_running and o.fitness_state == "training"
            phi, window_state = self._teacher_forced_features(params, capture=from_training)
            w, b = solve_readout(phi, self.train_targets, ridge=o.ridge, solver=o.solver)
            params["readout.W"].copy_(w)
            params["readout.b"].copy_(b)
            fit = torch.bmm(phi, w) + b.unsqueeze(1)
            self.last_train_mse = ((fit - self.train_targets) ** 2).mean(dim=(1, 2))
            n = vectors.shape[0]
            steps = n * int(self.scored.shape[0] * self.scored.shape[1])
            if self.free_running:
                error = self._free_running_error(params, window_state)
                washout = 0 if from_training else self.window_washout
                steps += n * len(self.window_starts) * (washout + self.horizon)
            else:
                error = self.last_train_mse
            error = torch.nan_to_num(error.double(), nan=1e12, posinf=1e12)
            self.last_fitness_mse = error
        return -error, steps, vectors.clone()

    def obs_normalizer(self) -> ObsNormalizer | None:
        """The fixed input scaling (``input_scale``), or ``None`` for raw inputs."""
        return self.normalizer

    def step(self) -> dict[str, float]:
        metrics = super().step()
        metrics["train_mse_min"] = float(self.last_train_mse.min())
        metrics["fitness_mse_min"] = -float(metrics["return_max"])
        metrics["fitness_mse_median"] = float(self.last_fitness_mse.median())
        return metrics


# -- using a trained model from Python ------------------------------------------------------
def predict(policy: Any, inputs: np.ndarray) -> np.ndarray:
    """Teacher-forced outputs ``[T, O]`` of a :class:`evolstm.network.policy.RecurrentPolicy` on
    ``inputs [T, I]`` (one sequence, state from zero)."""
    state = policy.init_state(1)
    outputs = []
    start = np.ones(1, dtype=bool)
    for x in np.asarray(inputs, dtype=np.float32):
        action, state = policy.act(x[None], state, start)
        start = np.zeros(1, dtype=bool)
        outputs.append(np.asarray(action, dtype=np.float64).reshape(-1))
    return np.stack(outputs)


def free_run(policy: Any, dataset: Any) -> np.ndarray:
    """The test predictions ``[T_test, O]`` of a time series, free-running after the
    teacher-forced washout and training steps (see :func:`envs.sequence_env.free_run`)."""
    from envs.sequence_env import free_run as run
    from evolstm.rollouts.success import policy_fn_maker

    make = policy_fn_maker(policy.spec, policy.to_vector(), policy.obs_norm)
    return run(make(), dataset)
