using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Common;

/// <summary>The numbers one merge of one tensor runs with.</summary>
internal sealed record TaskArithmeticSettings(double[] Weights, double[] Densities, double[] Gammas, double[] Epsilons, double Lambda, bool Normalize, bool Rescale)
{
    /// <summary>Divisors smaller than this (plain sums) count as zero, as in mergekit.</summary>
    public const double ZeroDivisor = 1e-8;

    /// <summary>
    /// Reads the variant's parameters for one tensor. The host hands every declared parameter with its default applied and
    /// its declared range checked (contract 1.3), so only mergekit's rule that ties two parameters together is checked here.
    /// </summary>
    public static TaskArithmeticSettings Read(
        TaskArithmeticVariant variant, ResolvedParameters p, IReadOnlyList<double> weights, IReadOnlyList<string> modelNames, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(variant);
        ArgumentNullException.ThrowIfNull(p);
        var count = weights.Count;
        var densities = new double[count];
        var gammas = new double[count];
        var epsilons = new double[count];
        for (var i = 0; i < count; i++)
        {
            densities[i] = variant.Sparsification == SparsificationMethod.None ? 1.0 : p.Float("density", i);
            gammas[i] = variant.Sparsification == SparsificationMethod.MagnitudeOutliers ? p.Float("gamma", i) : 0;
            if (variant.Sparsification == SparsificationMethod.RankedMagnitudeSampling)
            {
                epsilons[i] = p.Float("epsilon", i);
                if (densities[i] is > 0 and < 1 && (densities[i] + epsilons[i] >= 1 || densities[i] - epsilons[i] <= 0))
                {
                    var name = i < modelNames.Count ? modelNames[i] : $"#{i}";
                    throw new ArgumentOutOfRangeException(nameof(p),
                        $"{variant.Name}: model '{name}' for tensor '{tensorName}': density {densities[i]} +- epsilon {epsilons[i]} must lie inside (0, 1) (mergekit's rule)");
                }
            }
        }
        return new TaskArithmeticSettings(
            Weights: [.. weights],
            Densities: densities,
            Gammas: gammas,
            Epsilons: epsilons,
            Lambda: p.Float("lambda"),
            Normalize: p.Boolean("normalize"),
            Rescale: variant.Sparsification != SparsificationMethod.None && p.Boolean("rescale"));
    }

    /// <summary>
    /// True when Breadcrumbs drops model <paramref name="i"/>'s whole task vector of a tensor of <paramref name="numel"/>
    /// elements only because there is no outlier to remove there (gamma * n rounds down to 0, as for every tensor
    /// under 100 elements at the default gamma 0.01): mergekit's rule, which this merge follows and logs.
    /// </summary>
    public bool DropsSmallTensor(TaskArithmeticVariant variant, int i, long numel) =>
        variant.Sparsification == SparsificationMethod.MagnitudeOutliers && Densities[i] < 1.0 && numel > 0
        && (long)Math.Floor(Densities[i] * numel) > 0 && OutlierCounts(i, numel).Top <= 0;

    /// <summary>mergekit's magnitude_outliers counts: the smallest entries dropped and the largest entries dropped.</summary>
    private (long Bottom, long Top) OutlierCounts(int i, long numel)
    {
        var target = (long)Math.Floor(Densities[i] * numel);
        var top = (long)Math.Floor(Gammas[i] * numel);
        var bottom = numel - target - top;
        if (bottom < 0)
        {
            top += bottom;
            bottom = 0;
        }
        return (bottom, top);
    }

    /// <summary>Norms below this leave a sparsified delta unscaled (mergekit's <c>rescaled_masked_tensor</c> eps).</summary>
    public const double RescaleEpsilon = 1e-7;

    /// <summary>
    /// mergekit's L1 rescale factor of one model's sparsified delta over one tensor: sum|delta| / sum|kept delta|, or 1
    /// when either is below <see cref="RescaleEpsilon"/> (or not finite). The sums are accumulated in double.
    /// </summary>
    public static float L1RescaleFactor(double total, double kept) =>
        total >= RescaleEpsilon && kept >= RescaleEpsilon && double.IsFinite(total) && double.IsFinite(kept) ? (float)(total / kept) : 1f;

    /// <summary>
    /// mergekit's L1 rescale factor in a half-precision <paramref name="dtype"/>, as a 0-dim tensor of it, or null where it
    /// leaves the delta as it is (either norm below <see cref="RescaleEpsilon"/>): mergekit takes both norms with torch's
    /// <c>tensor.abs().sum()</c> in the dtype and divides them in it. torch accumulates that sum in float32 in a blocked
    /// order that depends on its thread count (through this project's libtorch, 182 of 848 bfloat16 sums came out one
    /// unit apart between one and two threads), so the norm here is the order-free value torch's one-thread sum gave in
    /// every case measured: the float64 sum of the magnitudes as stored in the dtype (<paramref name="before"/>,
    /// <paramref name="after"/>), rounded to float32 and then to the dtype. The comparison and the division are torch's.
    /// </summary>
    public static Tensor? L1RescaleFactorInDType(double before, double after, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var beforeNorm = NormInDType(before, dtype);
        var afterNorm = NormInDType(after, dtype);
        if (beforeNorm.lt(RescaleEpsilon).item<bool>() || afterNorm.lt(RescaleEpsilon).item<bool>())
        {
            return null;
        }
        return beforeNorm.div(afterNorm).MoveToOuterDisposeScope();
    }

    private static Tensor NormInDType(double sum, ScalarType dtype)
    {
        using var single = tensor((float)sum, ScalarType.Float32);
        return single.to(dtype);
    }

    /// <summary>True when model <paramref name="i"/>'s kept delta is rescaled by its L1 norms (rescale on, something sparsified).</summary>
    public bool RescalesL1(int i) => Rescale && Densities[i] < 1.0 && Densities[i] > 0;

    /// <summary>
    /// The magnitude ranks model <paramref name="i"/> needs over <paramref name="numel"/> elements: the 1-based rank of the
    /// lower bound (0: none) and of the upper bound (0: none); Drop is true when nothing of the model survives.
    /// TIES keeps the floor(density * n) largest magnitudes (and ties with the smallest of them); Breadcrumbs drops the top
    /// floor(gamma * n) and the bottom n - floor(density * n) - top.
    /// </summary>
    public (long Lower, long Upper, bool Drop) MagnitudeRanks(TaskArithmeticVariant variant, int i, long numel)
    {
        var density = Densities[i];
        if (density >= 1.0)
        {
            return (0, 0, false);
        }
        switch (variant.Sparsification)
        {
            case SparsificationMethod.Magnitude:
            {
                var keep = (long)Math.Floor(density * numel);
                return keep <= 0 ? (0, 0, true) : (numel - keep + 1, 0, false);
            }
            case SparsificationMethod.MagnitudeOutliers:
            {
                var (bottom, top) = OutlierCounts(i, numel);
                // mergekit keeps sorted[bottom:-top]: with no top entry to remove (gamma * n < 1) that slice is empty and
                // the model's whole task vector of the tensor is dropped (see DropsSmallTensor).
                var target = (long)Math.Floor(density * numel);
                if (target <= 0 || top <= 0 || numel - top <= bottom)
                {
                    return (0, 0, true);
                }
                return (bottom > 0 ? bottom + 1 : 0, numel - top, false);
            }
            case SparsificationMethod.None:
            case SparsificationMethod.Random:
            case SparsificationMethod.RankedMagnitudeSampling:
            default:
                return (0, 0, false);
        }
    }
}
