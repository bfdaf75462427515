"""The online linear probe and kNN monitor (loop/online_probe.py): it never changes the
backbone, it trains and is scored on held-out images, and it resumes exactly."""
import json
import math
import shutil

import jax
import numpy as np
import pytest

from medssl_jax import errors
from medssl_jax.loop import online_probe
from medssl_jax.loop import pretrain
from medssl_jax.loop import sharding

STEPS = 4


def _config(probe: bool):
  import conftest  # pylint: disable=g-import-not-at-top
  import synthetic_data  # pylint: disable=g-import-not-at-top
  synthetic_data.register()
  config = conftest.make_tiny_config("")
  config.data.name = synthetic_data.NAME
  config.num_steps, config.log_every, config.checkpoint_every = STEPS, 1, 2
  config.online_probe.enabled = probe
  config.online_probe.eval_images = 32
  config.eval_every = 2
  return config


def _run(config, workdir):
  return pretrain.run(config, workdir, mesh=sharding.create_mesh(jax.devices()[:2]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(final state without the probe, final state with it, its workdir)."""
  without = _run(_config(False), tmp_path_factory.mktemp("without"))
  workdir = tmp_path_factory.mktemp("with")
  with_probe = _run(_config(True), workdir)
  return without, with_probe, workdir


def _assert_same(a, b):
  leaves_a = jax.tree_util.tree_leaves_with_path(a)
  leaves_b = jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for (path, x), y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_backbone_is_bitwise_identical_with_and_without_the_probe(runs):
  without, with_probe, _ = runs
  assert without.probe is None and with_probe.probe is not None
  _assert_same(without.params, with_probe.params)
  _assert_same(without.batch_stats, with_probe.batch_stats)
  _assert_same(without.opt_state, with_probe.opt_state)


def test_probe_trains_and_is_scored_every_eval_every_steps(runs):
  _, with_probe, workdir = runs
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  # A zero-initialised probe predicts both classes equally: its first loss is ln 2.
  assert lines[0]["probe_loss"] == pytest.approx(math.log(2), abs=1e-6)
  scored = [line["step"] for line in lines if "online_probe_accuracy" in line]
  assert scored == [2, 4]
  for line in lines:
    if line["step"] in scored:
      for name in ("online_probe_accuracy", "online_probe_auroc", "online_knn_accuracy"):
        assert 0 <= line[name] <= 1, (name, line)
  assert np.abs(np.asarray(with_probe.probe.params["kernel"])).max() > 0


def test_probe_state_resumes_exactly(runs):
  _, with_probe, workdir = runs
  shutil.rmtree(workdir / "checkpoints" / str(STEPS))  # as if preempted after step 2
  resumed = _run(_config(True), workdir)
  _assert_same(with_probe.probe, resumed.probe)
  _assert_same(with_probe.params, resumed.params)


def test_probe_step_fits_a_fixed_batch_without_touching_its_inputs():
  from medssl_jax import methods  # pylint: disable=g-import-not-at-top

  import synthetic_data  # pylint: disable=g-import-not-at-top
  config = _config(True)
  config.online_probe.lr = 0.05
  source = synthetic_data.SyntheticSource("train", n=16)
  mesh = sharding.create_mesh(jax.devices()[:1])
  model = methods.get_method(config.method).create_model(config)
  variables = model.init(jax.random.key(0), np.zeros((2, 28, 28, 1), np.float32), train=True)
  before = jax.tree_util.tree_map(np.array, variables)
  probe = online_probe.init(config, variables, 2, 1)
  step = online_probe.jit_probe_step(config, mesh)
  losses = []
  for _ in range(30):
    probe, sums = step(probe, online_probe.zero_sums(), variables["params"], variables["batch_stats"],
                       source.images, source.labels)
    losses.append(float(sums["probe_loss"]))
  assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # the zero probe's loss
  # Random tiny features separate the classes slowly, but every step lowers the loss.
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  _assert_same(before, variables)  # the backbone it reads is not changed


class _Unlabelled:
  multi_label, num_classes = False, 0


def test_probe_without_classes_is_a_user_error():
  with pytest.raises(errors.UserError, match="online_probe"):
    online_probe.check(_config(True), _Unlabelled())


# Every other method's step compiles twice (with and without the probe): about a minute each
# on 2 cores, so slow; the fast tests above use SimCLR.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["micle", "moco", "simsiam", "byol", "tsimcne", "dino"])
def test_every_method_trains_the_probe_without_changing_its_backbone(method, tmp_path):
  configs = []
  for probe in (False, True):
    config = _config(probe)
    config.method, config.num_steps, config.checkpoint_every = method, 2, 2
    config.data.pairing = "patient" if method == "micle" else config.data.pairing
    config.moco.queue_size, config.moco.shuffle_bn_groups = 32, 2
    config.dino.update(out_dim=32, hidden_dim=16, bottleneck_dim=8, local_crops=2, local_size=12)
    configs.append(config)
  without = _run(configs[0], tmp_path / "without")
  with_probe = _run(configs[1], tmp_path / "with")
  _assert_same(without.params, with_probe.params)
  _assert_same(without.batch_stats, with_probe.batch_stats)
  if method in ("moco", "byol", "dino"):  # teachers, queues, centres (the others carry none)
    _assert_same(without.extra, with_probe.extra)
  lines = [json.loads(line) for line in (tmp_path / "with" / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in lines if "online_knn_accuracy" in line] == [2]
  assert all(np.isfinite(line["probe_loss"]) for line in lines)
