using SensMerging.Strategies.TaskArithmeticFamily;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

/// <summary>ram and ramplus_tl against the paper's rule as mergekit implements it, written out here in double.</summary>
public sealed class RamTests
{
    /// <param name="torchPath">Non-contiguous inputs, which take the libtorch chain instead of the managed loops.</param>
    [Theory]
    [InlineData(false, 1e-5, 0.1, 0.2, false)]
    [InlineData(false, 1e-5, 0.1, 0.2, true)]
    [InlineData(true, 1e-5, 0.1, 0.2, false)]
    [InlineData(true, 1e-5, 0.1, 0.2, true)]
    [InlineData(true, 0.05, 0.5, 10.0, false)]
    [InlineData(true, 0.05, 0.5, 10.0, true)]
    public void Ram_keeps_unique_entries_and_averages_shared_ones(bool plus, double epsilon, double r, double alpha, bool torchPath)
    {
        var rng = new Random(5);
        const int n = 240;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 0.1), Random(rng, n, 0.1), Random(rng, n, 0.1)];
        // Entries where some task vectors are exactly zero, so some entries are unique to one model and some to none.
        for (var e = 0; e < n; e += 3)
        {
            xs[0][e] = b[e];
            xs[1][e] = b[e];
        }
        for (var e = 1; e < n; e += 5)
        {
            xs[2][e] = b[e];
        }
        for (var e = 2; e < n; e += 7)
        {
            xs[0][e] = b[e];
            xs[1][e] = b[e];
            xs[2][e] = b[e];
        }
        var strategy = plus ? RamStrategy.PlusTensorLocal() : RamStrategy.Plain();
        var global = new Dictionary<string, object> { ["epsilon"] = epsilon };
        if (plus)
        {
            global["r"] = r;
            global["alpha"] = alpha;
        }
        var result = Run(strategy, b, xs, [2.0, 2.0, 2.0], global: global, shape: [24, 10], torchPath: torchPath);
        Close(Reference(b, xs, plus, epsilon, r, alpha), result, 1e-5);
    }

    private static double[] Reference(float[] b, float[][] xs, bool plus, double epsilon, double r, double alpha)
    {
        var n = b.Length;
        var t = xs.Select(x => x.Select((v, i) => (double)x[i] - b[i]).ToArray()).ToArray();
        var counted = t.Select(row => row.Select(v => Math.Abs(v) > epsilon).ToArray()).ToArray();
        var contributors = Enumerable.Range(0, n).Select(e => counted.Count(c => c[e])).ToArray();
        var lambda = t.Select((_, i) =>
        {
            if (!plus)
            {
                return 1.0;
            }
            var shared = Enumerable.Range(0, n).Count(e => counted[i][e] && contributors[e] > 1);
            var alone = Enumerable.Range(0, n).Count(e => counted[i][e] && contributors[e] == 1);
            return 1 + (r * Math.Clamp(shared / Math.Max(alone, epsilon), 0, alpha));
        }).ToArray();
        var result = new double[n];
        for (var e = 0; e < n; e++)
        {
            var sum = 0.0;
            for (var i = 0; i < t.Length; i++)
            {
                if (!counted[i][e])
                {
                    continue;
                }
                sum += contributors[e] == 1 ? lambda[i] * t[i][e] : t[i][e] / contributors[e];
            }
            result[e] = b[e] + sum;
        }
        return result;
    }
}
