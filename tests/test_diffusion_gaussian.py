"""The Gaussian process, its reverse step and losses against float64 NumPy/SciPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from piti_jax.diffusion import likelihoods
from piti_jax.diffusion.gaussian import make_diffusion
from piti_jax.diffusion.schedules import get_named_beta_schedule
from piti_jax.errors import PitiError

SHAPE = (4, 3, 2, 3)  # (B, H, W, C)
T_BATCH = np.array([0, 1, 500, 999])


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  x0 = np.clip(rng.normal(0.0, 0.5, SHAPE), -1, 1)
  noise = rng.normal(size=SHAPE)
  return x0, noise, rng


def column(values):
  return np.asarray(values)[:, None, None, None]


def reference_tables(betas):
  """Posterior of x_{t-1} by completing the square.

  q(x_{t-1} | x_t, x0) is proportional to N(x_{t-1}; sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) N(x_t; sqrt(a_t) x_{t-1}, b_t).
  """
  alpha_bar = np.cumprod(1.0 - betas)
  alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
  with np.errstate(divide="ignore"):
    precision = 1.0 / (1.0 - alpha_bar_prev) + (1.0 - betas) / betas
  variance = 1.0 / precision  # t = 0: 1 / inf = 0
  coef_x0 = np.where(np.isinf(precision), 1.0, variance * np.sqrt(alpha_bar_prev) / np.where(
      alpha_bar_prev < 1.0, 1.0 - alpha_bar_prev, 1.0))
  coef_xt = variance * np.sqrt(1.0 - betas) / betas
  return alpha_bar, variance, coef_x0, coef_xt


def test_tables_equal_float64_reference(x64):
  betas = get_named_beta_schedule("cosine", 1000)
  diffusion = make_diffusion("cosine", 1000, dtype=jnp.float64)
  assert diffusion.betas.dtype == jnp.float64
  alpha_bar, variance, coef_x0, coef_xt = reference_tables(betas)
  np.testing.assert_allclose(diffusion.alphas_cumprod, alpha_bar, rtol=1e-12)
  np.testing.assert_allclose(diffusion.posterior_variance, variance, rtol=1e-9, atol=1e-300)
  np.testing.assert_allclose(diffusion.posterior_mean_coef1, coef_x0, rtol=1e-9)
  np.testing.assert_allclose(diffusion.posterior_mean_coef2, coef_xt, rtol=1e-9, atol=1e-15)
  clipped = np.log(np.concatenate([[variance[1]], variance[1:]]))
  np.testing.assert_allclose(diffusion.posterior_log_variance_clipped, clipped, rtol=1e-12)


def test_q_sample_posterior_and_x0_from_eps(x64, data):
  x0, noise, _ = data
  diffusion = make_diffusion("cosine", 1000, dtype=jnp.float64)
  alpha_bar, variance, coef_x0, coef_xt = reference_tables(get_named_beta_schedule("cosine", 1000))
  ab = column(alpha_bar[T_BATCH])
  x_t = np.asarray(diffusion.q_sample(x0, T_BATCH, noise))
  np.testing.assert_allclose(x_t, np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise, rtol=1e-12)

  mean, var, log_var = diffusion.q_posterior_mean_variance(x0, x_t, T_BATCH)
  np.testing.assert_allclose(mean, column(coef_x0[T_BATCH]) * x0 + column(coef_xt[T_BATCH]) * x_t, rtol=1e-9,
                             atol=1e-12)
  np.testing.assert_allclose(np.broadcast_to(var, SHAPE), np.broadcast_to(column(variance[T_BATCH]), SHAPE),
                             rtol=1e-9)
  np.testing.assert_allclose(np.ravel(log_var), np.log(variance[np.maximum(T_BATCH, 1)]), rtol=1e-12)

  np.testing.assert_allclose(diffusion.pred_xstart_from_eps(x_t, T_BATCH, noise), x0, atol=1e-9)
  np.testing.assert_allclose(diffusion.pred_eps_from_xstart(x_t, T_BATCH, x0), noise, atol=1e-9)
  v = np.sqrt(ab) * noise - np.sqrt(1.0 - ab) * x0
  np.testing.assert_allclose(diffusion.v_target(x0, T_BATCH, noise), v, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(diffusion.pred_xstart_from_v(x_t, T_BATCH, v), x0, atol=1e-12)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_predictions_map_to_x0_and_targets(x64, data, prediction):
  x0, noise, _ = data
  diffusion = make_diffusion("linear", 1000, dtype=jnp.float64, prediction=prediction)
  x_t = diffusion.q_sample(x0, T_BATCH, noise)
  target = diffusion.training_target(x0, T_BATCH, noise)
  expected_target = {"eps": noise, "x0": x0, "v": diffusion.v_target(x0, T_BATCH, noise)}[prediction]
  np.testing.assert_allclose(target, expected_target)
  np.testing.assert_allclose(diffusion.pred_xstart(target, x_t, T_BATCH), x0, atol=1e-9)
  losses = diffusion.training_losses(jnp.concatenate([target, jnp.zeros_like(target)], -1), x0, x_t, T_BATCH, noise)
  np.testing.assert_allclose(losses["mse"], 0.0, atol=1e-20)
  np.testing.assert_allclose(losses["pred_xstart"], x0, atol=1e-9)


def test_learned_range_variance(x64, data):
  x0, noise, rng = data
  diffusion = make_diffusion("cosine", 1000, "100", dtype=jnp.float64)
  t = np.array([0, 1, 50, 99])
  x_t = diffusion.q_sample(x0, t, noise)
  v = rng.uniform(-1, 1, SHAPE)
  out = diffusion.p_mean_variance(jnp.concatenate([noise, v], -1), x_t, t, clip_denoised=False)
  betas = np.asarray(diffusion.betas)
  variance = np.asarray(diffusion.posterior_variance)
  min_log = column(np.log(np.concatenate([[variance[1]], variance[1:]]))[t])
  max_log = column(np.log(betas)[t])
  np.testing.assert_allclose(out["log_variance"], (v + 1) / 2 * max_log + (1 - (v + 1) / 2) * min_log, rtol=1e-12)
  np.testing.assert_allclose(out["pred_xstart"], x0, atol=1e-9)
  mean, _, _ = diffusion.q_posterior_mean_variance(x0, x_t, t)
  np.testing.assert_allclose(out["mean"], mean, atol=1e-9)
  ends = diffusion.p_mean_variance(jnp.concatenate([noise, np.full(SHAPE, -1.0)], -1), x_t, t)["log_variance"]
  np.testing.assert_allclose(ends, np.broadcast_to(min_log, SHAPE), rtol=1e-12)
  ends = diffusion.p_mean_variance(jnp.concatenate([noise, np.full(SHAPE, 1.0)], -1), x_t, t)["log_variance"]
  np.testing.assert_allclose(ends, np.broadcast_to(max_log, SHAPE), rtol=1e-12)


def test_fixed_variance_and_clipping(x64, data):
  x0, noise, _ = data
  diffusion = make_diffusion("cosine", 1000, dtype=jnp.float64)
  x_t = diffusion.q_sample(x0, T_BATCH, noise)
  betas = get_named_beta_schedule("cosine", 1000)
  variance = np.asarray(diffusion.posterior_variance)
  large = np.log(np.concatenate([[variance[1]], betas[1:]]))
  out = diffusion.p_mean_variance(noise * 10.0, x_t, T_BATCH, clip_denoised=True)
  np.testing.assert_allclose(np.ravel(out["log_variance"]), large[T_BATCH], rtol=1e-12)
  unclipped = diffusion.pred_xstart_from_eps(x_t, T_BATCH, noise * 10.0)
  np.testing.assert_allclose(out["pred_xstart"], np.clip(unclipped, -1, 1))
  small = make_diffusion("cosine", 1000, dtype=jnp.float64, fixed_variance="small")
  np.testing.assert_allclose(small.fixed_log_variance, small.posterior_log_variance_clipped)
  losses = diffusion.training_losses(noise + 0.1, x0, x_t, T_BATCH, noise)
  np.testing.assert_allclose(losses["mse"], 0.01, rtol=1e-9)
  np.testing.assert_array_equal(losses["vb"], 0.0)
  np.testing.assert_allclose(losses["loss"], losses["mse"])


def test_normal_kl_equals_references(x64):
  rng = np.random.default_rng(1)
  mean1, mean2 = rng.normal(size=50), rng.normal(size=50)
  logvar1, logvar2 = rng.uniform(-6, 1, 50), rng.uniform(-6, 1, 50)
  kl = np.asarray(likelihoods.normal_kl(mean1, logvar1, mean2, logvar2))
  std1, std2 = np.exp(0.5 * logvar1), np.exp(0.5 * logvar2)
  expected = np.log(std2 / std1) + (std1**2 + (mean1 - mean2)**2) / (2 * std2**2) - 0.5
  np.testing.assert_allclose(kl, expected, rtol=1e-12, atol=1e-14)
  p, q = stats.norm(0.3, 0.7), stats.norm(-0.2, 1.3)
  numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -12, 12)
  assert float(likelihoods.normal_kl(0.3, 2 * math.log(0.7), -0.2, 2 * math.log(1.3))) == pytest.approx(
      numeric, rel=1e-9)


def test_discretized_gaussian_log_likelihood_equals_references(x64):
  rng = np.random.default_rng(2)
  x = rng.integers(0, 256, 400) / 127.5 - 1.0
  x[:4] = [-1.0, 1.0, -1.0, 1.0]
  means = np.clip(x + rng.normal(0, 0.05, 400), -1.2, 1.2)
  log_scales = rng.uniform(np.log(0.005), np.log(0.2), 400)
  log_probs = np.asarray(likelihoods.discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales))

  def edges(cdf):
    upper = cdf((x - means + 1 / 255) / np.exp(log_scales))
    lower = cdf((x - means - 1 / 255) / np.exp(log_scales))
    prob = np.where(x < -0.999, upper, np.where(x > 0.999, 1.0 - lower, upper - lower))
    return np.log(np.maximum(prob, 1e-12)), prob

  tanh_cdf = lambda z: 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))
  expected, _ = edges(tanh_cdf)
  likely = expected > -10.0  # elsewhere cdf_plus - cdf_min cancels to a few significant digits
  np.testing.assert_allclose(log_probs[likely], expected[likely], rtol=1e-10)
  np.testing.assert_allclose(log_probs, expected, rtol=1e-5)
  # The tanh CDF approximates the exact normal CDF to about 1e-3 in probability.
  _, exact_prob = edges(stats.norm.cdf)
  np.testing.assert_allclose(np.exp(log_probs), exact_prob, atol=2e-3)
  assert np.all(log_probs <= 0.0)


def test_vb_of_true_posterior_has_zero_kl(x64, data):
  x0, noise, _ = data
  diffusion = make_diffusion("cosine", 1000, dtype=jnp.float64)
  x_t = diffusion.q_sample(x0, T_BATCH, noise)
  exact = jnp.concatenate([noise, -jnp.ones_like(noise)], -1)  # true x0 and the posterior variance
  vb = np.asarray(diffusion.vb_terms_bpd(exact, x0, x_t, T_BATCH))
  np.testing.assert_allclose(vb[1:], 0.0, atol=1e-9)
  # At t = 0 the term is the decoder NLL in bits per dimension.
  log_scale = 0.5 * float(diffusion.posterior_log_variance_clipped[0])
  mean, _, _ = diffusion.q_posterior_mean_variance(x0, x_t, T_BATCH)
  nll = -np.asarray(likelihoods.discretized_gaussian_log_likelihood(x0[:1], means=mean[:1],
                                                                    log_scales=np.full(SHAPE[1:], log_scale)[None]))
  assert vb[0] == pytest.approx(nll.mean() / np.log(2.0), rel=1e-12)
  assert vb[0] > 0
  wrong = diffusion.vb_terms_bpd(exact.at[..., :3].add(0.1), x0, x_t, T_BATCH)
  assert np.all(np.asarray(wrong)[1:] > 1e-6)


@jax.jit
def losses_and_gradients(diffusion, output, x0, noise, t, weights):
  """training_losses, vb_terms_bpd and the gradients of sum(vb) and sum(mse) wrt the model output."""
  x_t = diffusion.q_sample(x0, t, noise)
  loss_fn = lambda out, name: diffusion.training_losses(out, x0, x_t, t, noise, weights=weights)[name].sum()
  return dict(losses=diffusion.training_losses(output, x0, x_t, t, noise, weights=weights),
              vb_terms=diffusion.vb_terms_bpd(output, x0, x_t, t),
              pred_xstart=diffusion.pred_xstart_from_eps(x_t, t, output[..., :3]),
              vb_grad=jax.grad(loss_fn)(output, "vb"), mse_grad=jax.grad(loss_fn)(output, "mse"))


def test_training_losses_hybrid_and_stop_gradient(data):
  x0, noise, rng = data
  output = jnp.asarray(np.concatenate([noise + rng.normal(0, 0.1, SHAPE), rng.uniform(-1, 1, SHAPE)], -1),
                       jnp.float32)
  weights = jnp.array([1.0, 2.0, 0.5, 3.0])
  result = losses_and_gradients(make_diffusion("cosine", 1000), output, x0, noise, T_BATCH, weights)
  losses = result["losses"]
  np.testing.assert_allclose(losses["mse"], np.mean((np.asarray(output[..., :3]) - noise)**2, axis=(1, 2, 3)),
                             rtol=1e-5)
  np.testing.assert_allclose(losses["vb"], result["vb_terms"], rtol=1e-6)
  np.testing.assert_allclose(losses["loss"], losses["mse"] + losses["vb"], rtol=1e-6)
  np.testing.assert_allclose(losses["weighted_loss"], weights * losses["loss"], rtol=1e-6)
  np.testing.assert_allclose(losses["pred_xstart"], result["pred_xstart"])
  # Stop-gradient on the mean: vb teaches only the v channels, mse only the eps channels.
  assert np.all(np.asarray(result["vb_grad"][..., :3]) == 0.0)
  assert np.abs(np.asarray(result["vb_grad"][..., 3:])).max() > 0.0
  assert np.all(np.asarray(result["mse_grad"][..., 3:]) == 0.0)
  # vb is scaled by T / 1000.
  half = losses_and_gradients(make_diffusion("cosine", 500), output, x0, noise, T_BATCH // 2, weights)
  np.testing.assert_allclose(half["losses"]["vb"], 0.5 * half["vb_terms"], rtol=1e-6)


def test_bad_model_output_is_a_user_error(data):
  x0, noise, _ = data
  diffusion = make_diffusion("cosine", 10)
  with pytest.raises(PitiError, match="channels"):
    diffusion.training_losses(jnp.zeros(SHAPE[:-1] + (5,)), x0, x0, np.zeros(4, int), noise)
  with pytest.raises(PitiError, match="prediction"):
    make_diffusion("cosine", 10, prediction="score")
