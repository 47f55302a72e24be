using SensMerging.Abstractions;

namespace SensMerging.Strategies.Common;

/// <summary>The numbers one merge of one tensor runs with.</summary>
internal sealed record TaskArithmeticSettings(double[] Weights, double[] Densities, double[] Gammas, double Lambda, bool Normalize, bool Rescale)
{
    /// <summary>Divisors smaller than this (plain sums) count as zero, as in mergekit.</summary>
    public const double ZeroDivisor = 1e-8;

    /// <summary>Reads and range-checks the variant's parameters for one tensor.</summary>
    public static TaskArithmeticSettings Read(
        TaskArithmeticVariant variant, ResolvedParameters p, IReadOnlyList<double> weights, IReadOnlyList<string> modelNames, string tensorName)
    {
        var count = weights.Count;
        var densities = new double[count];
        var gammas = new double[count];
        for (var i = 0; i < count; i++)
        {
            var name = i < modelNames.Count ? modelNames[i] : $"#{i}";
            densities[i] = variant.Sparsification == SparsificationMethod.None
                ? 1.0
                : RequestChecks.FloatInRange(p, variant.Name, "density", i, name, tensorName, 0, 1);
            gammas[i] = variant.Sparsification == SparsificationMethod.MagnitudeOutliers
                ? RequestChecks.FloatInRange(p, variant.Name, "gamma", i, name, tensorName, 0, 1)
                : 0;
        }
        var lambda = p.Has("lambda") ? p.Float("lambda") : 1.0;
        if (!double.IsFinite(lambda))
        {
            throw new ArgumentOutOfRangeException(nameof(p), $"{variant.Name}: parameter 'lambda' is not finite ({lambda})");
        }
        return new TaskArithmeticSettings(
            Weights: [.. weights],
            Densities: densities,
            Gammas: gammas,
            Lambda: lambda,
            Normalize: p.Has("normalize") ? p.Boolean("normalize") : variant.DefaultNormalize,
            Rescale: variant.Sparsification == SparsificationMethod.Random && (p.Has("rescale") ? p.Boolean("rescale") : variant.DefaultRescale));
    }

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
                var target = (long)Math.Floor(density * numel);
                var top = (long)Math.Floor(Gammas[i] * numel);
                var bottom = numel - target - top;
                if (bottom < 0)
                {
                    top += bottom;
                    bottom = 0;
                }
                if (target <= 0 || numel - top <= bottom)
                {
                    return (0, 0, true);
                }
                return (bottom > 0 ? bottom + 1 : 0, top > 0 ? numel - top : 0, false);
            }
            case SparsificationMethod.None:
            case SparsificationMethod.Random:
            default:
                return (0, 0, false);
        }
    }
}
