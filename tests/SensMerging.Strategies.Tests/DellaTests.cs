using System.Security.Cryptography;
using SensMerging.Strategies.Common;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

/// <summary>DELLA (mergekit della / della_linear) against the published rule, computed here independently.</summary>
public sealed class DellaTests
{
    private static readonly Func<Common.TaskArithmeticVariant, SensMerging.Abstractions.IMergeStrategy> Strategy = v => GeneralizedTaskArithmeticStrategy.Create(v);

    [Fact]
    public void Keep_probability_rises_with_the_magnitude_rank_within_each_row()
    {
        const int rows = 400, columns = 250;
        var rng = new Random(3);
        var b = Random(rng, rows * columns);
        var x = Random(rng, rows * columns, 1, 0.1);
        const double density = 0.5, epsilon = 0.3;
        var result = Run(Strategy(TaskArithmeticVariant.DellaLinear), b, [x], global: new() { ["rescale"] = false },
            perModel: [new() { ["density"] = density, ["epsilon"] = epsilon }], seed: 77, shape: [rows, columns]);

        // Bucket every entry by its magnitude rank in its row (0-based r of n): expected keep probability
        // density - epsilon + 2 epsilon r / (n - 1), from 0.2 for the smallest to 0.8 for the largest.
        const int buckets = 5;
        var kept = new int[buckets];
        var seen = new int[buckets];
        var expected = new double[buckets];
        for (var r = 0; r < rows; r++)
        {
            var ranked = Enumerable.Range(0, columns).OrderBy(c => Math.Abs(x[(r * columns) + c] - b[(r * columns) + c])).ToArray();
            for (var rank = 0; rank < columns; rank++)
            {
                var e = (r * columns) + ranked[rank];
                var bucket = rank * buckets / columns;
                seen[bucket]++;
                expected[bucket] += density - epsilon + (2 * epsilon * rank / (columns - 1));
                if (result[e] != b[e])
                {
                    kept[bucket]++;
                    Assert.True(Math.Abs(x[e] - result[e]) <= 1e-6 * Math.Max(1, Math.Abs(x[e])), $"element {e}"); // rescale off: the model's value
                }
            }
        }
        for (var k = 0; k < buckets; k++)
        {
            var observed = kept[k] / (double)seen[k];
            var p = expected[k] / seen[k];
            // 20,000 entries per bucket: 5 standard deviations of a binomial proportion is under 0.018.
            Assert.True(Math.Abs(observed - p) < 0.02, $"rank bucket {k}: kept {observed:F3}, expected {p:F3}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Kept_entries_are_rescaled_to_the_L1_norm_and_della_elects_signs(bool torchPath)
    {
        var rng = new Random(8);
        const int rows = 30, columns = 40, n = rows * columns;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1.2), Random(rng, n, 0.9, 0.1), Random(rng, n, 0.7)];
        double[] densities = [0.4, 0.6, 0.5];
        double[] weights = [1.0, 0.6, 0.8];
        const long seed = 19;
        var sparse = new double[xs.Length][];
        for (var i = 0; i < xs.Length; i++)
        {
            // Model i alone with seed + i draws model i's mask of the joint merge; rescale off recovers the mask.
            var perModel = new Dictionary<string, object> { ["density"] = densities[i], ["epsilon"] = 0.1 };
            var masked = Run(Strategy(TaskArithmeticVariant.DellaLinear), b, [xs[i]], global: new() { ["rescale"] = false }, perModel: [perModel], seed: seed + i, shape: [rows, columns], torchPath: torchPath);
            var delta = Reference.Delta(xs[i], b);
            var keptDelta = delta.Select((d, e) => masked[e] == b[e] ? 0.0 : d).ToArray();
            sparse[i] = Reference.RescaleL1(delta, keptDelta);
            var rescaled = Run(Strategy(TaskArithmeticVariant.DellaLinear), b, [xs[i]], perModel: [perModel], seed: seed + i, shape: [rows, columns], torchPath: torchPath);
            Close([.. sparse[i].Select((d, e) => b[e] + d)], rescaled);
        }
        var all = densities.Select(d => new Dictionary<string, object> { ["density"] = d, ["epsilon"] = 0.1 }).ToArray();
        var della = Run(Strategy(TaskArithmeticVariant.Della), b, xs, weights, global: null, perModel: all, seed: seed, shape: [rows, columns], torchPath: torchPath);
        Close(Reference.Combine(b, sparse, weights, consensus: true, normalize: true, 1.0), della, 1e-4);
        var linear = Run(Strategy(TaskArithmeticVariant.DellaLinear), b, xs, weights, global: new() { ["lambda"] = 0.7 }, perModel: all, seed: seed, shape: [rows, columns], torchPath: torchPath);
        Close(Reference.Combine(b, sparse, weights, consensus: false, normalize: false, 0.7), linear, 1e-4);
    }

    [Fact]
    public void A_fixed_seed_gives_the_recorded_bytes()
    {
        // Golden bytes: a change of the drop rule, the random stream or the rescale shows here first.
        var rng = new Random(5);
        var b = Random(rng, 24 * 16);
        float[][] xs = [Random(rng, 24 * 16), Random(rng, 24 * 16, 0.5)];
        var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.5 }, new() { ["density"] = 0.7 } };
        var result = Run(Strategy(TaskArithmeticVariant.Della), b, xs, [1.0, 0.8], perModel: perModel, seed: 2024, shape: [24, 16]);
        var hash = Convert.ToHexStringLower(SHA256.HashData([.. result.SelectMany(BitConverter.GetBytes)]));
        Assert.Equal("a8f589a9a0d2f1a0f0b10c3c041d7c124055e770b94788e8e85bd24a38c25881", hash);
    }

    [Fact]
    public void Density_plus_or_minus_epsilon_outside_the_unit_interval_is_refused_naming_both()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Run(Strategy(TaskArithmeticVariant.Della), [0f, 0f, 0f], [[1f, 2f, 3f]],
            perModel: [new() { ["density"] = 0.9, ["epsilon"] = 0.15 }]));
        Assert.Contains("density 0.9 +- epsilon 0.15", error.Message, StringComparison.Ordinal);
        Assert.False(Strategy(TaskArithmeticVariant.Della) is SensMerging.Abstractions.IStreamingMergeStrategy);
        Assert.Equal(0.15, Strategy(TaskArithmeticVariant.Della).Parameters.Single(p => p.Name == "epsilon").Default);
        Assert.Equal(true, Strategy(TaskArithmeticVariant.DellaLinear).Parameters.Single(p => p.Name == "rescale").Default);
    }
}
