"""larp_hf.metrics against closed forms and brute-force numpy references."""

import numpy as np
import pytest
import torch

from larp_hf.metrics import density_coverage, frechet_distance, precision_recall, top_k_accuracy, top_k_hits


def gaussian_with_exact_statistics(num_samples, mean, covariance, seed=0):
    """Samples whose sample mean and (unbiased) covariance are exactly `mean` and `covariance`."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_samples, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T  # whitened: covariance exactly I
    return torch.from_numpy(z @ np.linalg.cholesky(covariance).T + mean)


def reference_frechet(mean1, cov1, mean2, cov2):
    """tr (Σ₁Σ₂)^{1/2} as tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}, both square roots by symmetric eigendecomposition."""
    values, vectors = np.linalg.eigh(cov1)
    root1 = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    return np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))


def test_frechet_distance_is_zero_for_identical_sets():
    features = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mean1, mean2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    variances1, variances2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    first = gaussian_with_exact_statistics(500, mean1, np.diag(variances1), seed=0)
    second = gaussian_with_exact_statistics(700, mean2, np.diag(variances2), seed=1)
    # ‖Δμ‖² + Σ(√a − √b)² = 5 + (1 − 3)² + (2 − 1)² + 0 = 10
    assert frechet_distance(first, second) == pytest.approx(10.0, rel=1e-9)


def test_frechet_distance_matches_an_independent_computation_for_full_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    cov1, cov2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mean1, mean2 = rng.standard_normal(6), rng.standard_normal(6)
    first = gaussian_with_exact_statistics(400, mean1, cov1, seed=3)
    second = gaussian_with_exact_statistics(400, mean2, cov2, seed=4)
    assert frechet_distance(first, second) == pytest.approx(reference_frechet(mean1, cov1, mean2, cov2), rel=1e-8)
    # float32 input is promoted to float64 statistics.
    assert frechet_distance(first.float(), second.float()) == pytest.approx(reference_frechet(mean1, cov1, mean2, cov2), rel=1e-4)


def brute_force_precision_recall(real, generated, k):
    def radii(x):
        distances = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself

    def inside(points, centres, centre_radii):
        return (np.linalg.norm(points[:, None] - centres[None], axis=-1) <= centre_radii[None]).any(axis=1)

    real, generated = real.numpy(), generated.numpy()
    return inside(generated, real, radii(real)).mean(), inside(real, generated, radii(generated)).mean()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_matches_brute_force_and_does_not_depend_on_chunking(k):
    generator = torch.Generator().manual_seed(k)
    real = torch.randn(200, 5, generator=generator, dtype=torch.float64)
    generated = 1.3 * torch.randn(150, 5, generator=generator, dtype=torch.float64) + 1.0
    expected = brute_force_precision_recall(real, generated, k)
    for chunk_size in (7, 1024):
        scores = precision_recall(real, generated, k=k, chunk_size=chunk_size)
        assert (scores["precision"], scores["recall"]) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case where both are informative


def test_precision_recall_reference_cases():
    real = torch.randn(400, 3, generator=torch.Generator().manual_seed(0))
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(real, real + 50.0) == {"precision": 0.0, "recall": 0.0}
    subset = real[real[:, 0] > 0]  # half of the real samples: all real-looking, but half the modes missing
    scores = precision_recall(real, subset)
    assert scores["precision"] == 1.0
    assert 0.4 < scores["recall"] < 0.8


def test_density_and_coverage():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, 4, generator=generator, dtype=torch.float64)
    assert density_coverage(real, real)["coverage"] == 1.0
    assert density_coverage(real, real + 50.0) == {"density": 0.0, "coverage": 0.0}
    generated = torch.randn(200, 4, generator=generator, dtype=torch.float64) * 0.5
    real_np, generated_np = real.numpy(), generated.numpy()
    distances = np.linalg.norm(real_np[:, None] - real_np[None], axis=-1)
    radii = np.sort(distances, axis=1)[:, 5]
    inside = np.linalg.norm(generated_np[:, None] - real_np[None], axis=-1) <= radii[None]  # (M, N)
    scores = density_coverage(real, generated, k=5, chunk_size=13)
    assert scores["density"] == pytest.approx(inside.sum() / (5 * len(generated)), abs=1e-12)
    assert scores["coverage"] == pytest.approx(inside.any(axis=0).mean(), abs=1e-12)
    assert scores["density"] > 1  # samples crowd the dense centre


def test_top_k_accuracy_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 10, 20, generator=generator)
    labels = torch.randint(0, 20, (4, 10), generator=generator)
    labels[:, :2] = -100
    for k in (1, 5, 20):
        ranks = (logits > logits.gather(-1, labels.clamp(min=0)[..., None])).sum(-1)  # how many logits beat the label
        expected = (ranks[:, 2:] < k).float().mean().item()
        assert top_k_accuracy(logits, labels, k=k) == pytest.approx(expected)
    assert top_k_accuracy(logits, labels, k=20) == 1.0
    for k in (1, 5):  # per-position hits, what a recipe sums per example across batches and processes
        hits = top_k_hits(logits, labels, k=k)
        assert hits.shape == labels.shape and not hits[labels == -100].any()
        assert hits.sum().item() / (labels != -100).sum().item() == pytest.approx(top_k_accuracy(logits, labels, k=k))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: frechet_distance(torch.randn(10, 16), torch.randn(100, 16)), "more samples than dimensions"),
        (lambda: frechet_distance(torch.randn(100, 16), torch.randn(100, 8)), "different widths"),
        (lambda: precision_recall(torch.randn(100, 16), torch.randn(100, 8)), "different widths"),
        (lambda: precision_recall(torch.randn(3, 4), torch.randn(100, 4)), "at least 4"),
        (lambda: frechet_distance(torch.randn(100), torch.randn(100)), r"\(num_samples, feature_dim\)"),
        (lambda: density_coverage(torch.full((10, 2), float("nan")), torch.randn(10, 2)), "NaN"),
        (lambda: top_k_accuracy(torch.randn(3, 5), torch.tensor([1, 2]), k=1), "do not match"),
        (lambda: top_k_accuracy(torch.randn(3, 5), torch.tensor([1, 2, 3]), k=6), "between 1"),
        (lambda: precision_recall(torch.randn(20, 4), torch.randn(20, 4), chunk_size=-1), "chunk_size"),
        (lambda: precision_recall(torch.randn(20, 4), torch.randn(20, 4), chunk_size=0), "chunk_size"),
        (lambda: density_coverage(torch.randn(20, 4), torch.randn(20, 4), chunk_size=2.5), "chunk_size"),
        (lambda: precision_recall(torch.randn(20, 4), torch.randn(20, 4), k=2.5), "integer"),
    ],
)
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
