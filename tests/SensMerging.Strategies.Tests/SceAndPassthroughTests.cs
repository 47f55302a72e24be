using SensMerging.Strategies.Linear;
using SensMerging.Strategies.TaskArithmeticFamily;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

/// <summary>sce and passthrough against their definitions, written out here in double.</summary>
public sealed class SceAndPassthroughTests
{
    [Theory]
    [InlineData(1.0)]
    [InlineData(0.3)]
    public void Sce_selects_by_variance_weights_by_energy_and_erases_minority_signs(double topk)
    {
        var rng = new Random(31);
        const int n = 200;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1, 0.1), Random(rng, n, 0.5, -0.2), Random(rng, n, 1.5)];
        xs[1][5] = b[5]; // a zero entry in one task vector
        var result = Run(new SceStrategy(), b, xs, [7.0, 7.0, 7.0], global: new() { ["select_topk"] = topk }, shape: [20, 10]);
        Close(ReferenceSce(b, xs, topk), result, 1e-5);
    }

    [Fact]
    public void Passthrough_copies_its_one_model_with_an_optional_scale()
    {
        var rng = new Random(2);
        var x = Random(rng, 50);
        Assert.Equal(x, Run(new PassthroughStrategy(), null, [x]));
        Close([.. x.Select(v => v * 0.5)], Run(new PassthroughStrategy(), null, [x], perModel: [new() { ["scale"] = 0.5 }]));
        var error = Assert.Throws<ArgumentException>(() => Run(new PassthroughStrategy(), x, [x]));
        Assert.Contains("no base model", error.Message, StringComparison.Ordinal);
    }

    private static double[] ReferenceSce(float[] b, float[][] xs, double topk)
    {
        var n = b.Length;
        var k = xs.Length;
        var t = xs.Select(x => x.Select((v, i) => (double)v - b[i]).ToArray()).ToArray();
        if (topk < 1)
        {
            var variance = Enumerable.Range(0, n).Select(e =>
            {
                var mean = t.Average(row => row[e]);
                return t.Average(row => (row[e] - mean) * (row[e] - mean));
            }).ToArray();
            var keep = (int)(variance.Count(v => v != 0) * topk);
            var kept = Enumerable.Range(0, n).OrderByDescending(e => variance[e]).Take(keep).ToHashSet();
            t = [.. t.Select(row => row.Select((v, e) => kept.Contains(e) ? v : 0.0).ToArray())];
        }
        var energy = t.Select(row => row.Average(v => v * v)).ToArray();
        var total = energy.Sum();
        var w = Math.Abs(total) < 1e-6 ? [.. energy.Select(_ => 1.0 / k)] : energy.Select(x => x / total).ToArray();
        var result = new double[n];
        for (var e = 0; e < n; e++)
        {
            var majority = t.Sum(row => row[e]) >= 0 ? 1 : -1;
            double sum = 0, weights = 0;
            for (var i = 0; i < k; i++)
            {
                if (Math.Sign(t[i][e]) == majority)
                {
                    sum += w[i] * t[i][e];
                    weights += w[i];
                }
            }
            result[e] = b[e] + (sum / Math.Max(weights, 1e-6));
        }
        return result;
    }
}
