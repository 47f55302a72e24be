using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>
/// Computes <c>sparsify(x_i - base)</c> into a caller-owned buffer, deterministically: calling it twice for the same
/// model yields the same tensor (magnitude thresholds are remembered, random masks come from the same seed).
/// </summary>
internal sealed class DeltaSparsifier
{
    private readonly TaskArithmeticVariant _variant;
    private readonly TaskArithmeticSettings _settings;
    private readonly long _seed;
    private readonly double[] _lower;
    private readonly double[] _upper;
    private readonly bool[] _known;

    public DeltaSparsifier(TaskArithmeticVariant variant, TaskArithmeticSettings settings, long seed, int count)
    {
        _variant = variant;
        _settings = settings;
        _seed = seed;
        _lower = new double[count];
        _upper = new double[count];
        _known = new bool[count];
    }

    /// <summary>Writes the sparsified delta of model <paramref name="model"/> into <paramref name="delta"/>; <paramref name="mask"/> is scratch.</summary>
    public void Delta(int model, Tensor input, Tensor baseTensor, Tensor delta, Tensor? mask)
    {
        delta.copy_(input).sub_(baseTensor);
        var density = _settings.Densities[model];
        if (_variant.Sparsification == SparsificationMethod.None || density >= 1.0)
        {
            return;
        }
        switch (_variant.Sparsification)
        {
            case SparsificationMethod.Magnitude:
                KeepLargest(model, delta, mask!, density);
                break;
            case SparsificationMethod.Random:
                DropRandom(model, delta, mask!, density);
                break;
            case SparsificationMethod.MagnitudeOutliers:
                KeepBand(model, delta, mask!, density, _settings.Gammas[model]);
                break;
            case SparsificationMethod.None:
            default:
                break;
        }
    }

    /// <summary>TIES trim: keep the floor(density * n) largest magnitudes (and anything tied with the smallest of them).</summary>
    private void KeepLargest(int model, Tensor delta, Tensor mask, double density)
    {
        var numel = delta.numel();
        var keep = (long)Math.Floor(density * numel);
        if (keep <= 0)
        {
            delta.zero_();
            return;
        }
        if (!_known[model])
        {
            _lower[model] = MagnitudeSelect.KthSmallestMagnitude(delta, numel - keep + 1, mask);
            _known[model] = true;
        }
        mask.copy_(delta).abs_().ge_(_lower[model]);
        delta.mul_(mask);
    }

    /// <summary>DARE: keep each entry with probability density (mask from a CPU/GPU generator seeded Seed + model).</summary>
    private void DropRandom(int model, Tensor delta, Tensor mask, double density)
    {
        if (density <= 0)
        {
            delta.zero_();
            return;
        }
        using var generator = new Generator(unchecked((ulong)(_seed + model)), delta.device);
        // keep where u < density, u ~ U[0, 1): a Bernoulli(density) mask (uniform_ + lt_ runs ~8x faster than bernoulli_ here)
        mask.uniform_(0.0, 1.0, generator).lt_(density);
        delta.mul_(mask);
        if (_settings.Rescale)
        {
            delta.div_(density);
        }
    }

    /// <summary>
    /// Breadcrumbs: with n entries ranked by magnitude (ascending), drop the top floor(gamma * n) and the bottom
    /// n - floor(density * n) - top, keeping the band between (boundary ties kept).
    /// </summary>
    private void KeepBand(int model, Tensor delta, Tensor mask, double density, double gamma)
    {
        var numel = delta.numel();
        var target = (long)Math.Floor(density * numel);
        var top = (long)Math.Floor(gamma * numel);
        var bottom = numel - target - top;
        if (bottom < 0)
        {
            top += bottom;
            bottom = 0;
        }
        if (target <= 0 || numel - top <= bottom)
        {
            delta.zero_();
            return;
        }
        if (!_known[model])
        {
            _lower[model] = bottom > 0 ? MagnitudeSelect.KthSmallestMagnitude(delta, bottom + 1, mask) : double.NegativeInfinity;
            _upper[model] = top > 0 ? MagnitudeSelect.KthSmallestMagnitude(delta, numel - top, mask) : double.PositiveInfinity;
            _known[model] = true;
        }
        if (bottom > 0)
        {
            mask.copy_(delta).abs_().ge_(_lower[model]);
            delta.mul_(mask);
        }
        if (top > 0)
        {
            mask.copy_(delta).abs_().le_(_upper[model]);
            delta.mul_(mask);
        }
    }
}
