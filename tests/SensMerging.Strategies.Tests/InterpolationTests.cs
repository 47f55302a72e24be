using SensMerging.Strategies.Interpolation;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

/// <summary>nearswap, multislerp and karcher against their definitions written out here step by step, in double.</summary>
public sealed class InterpolationTests
{
    [Fact]
    public void Nearswap_takes_the_model_where_it_is_near_the_base()
    {
        var rng = new Random(2);
        var a = Random(rng, 300);
        var b = a.Select((v, i) => v + (float)((i % 3 == 0 ? 1e-4 : 0.2) * (rng.NextDouble() - 0.5))).ToArray();
        b[7] = a[7]; // identical: |a - b| floored at 1e-6
        const double t = 0.01;
        var result = Run(new NearSwapStrategy(), a, [b], global: new() { ["t"] = t }, shape: [30, 10]);
        var expected = a.Select((x, i) =>
        {
            var w = Math.Clamp(t / Math.Max(Math.Abs((double)x - b[i]), 1e-6), 0, 1);
            return (w * b[i]) + ((1 - w) * x);
        }).ToArray();
        Close(expected, result, 1e-6);
        Assert.Equal(b[0], result[0]); // within t: the model's value exactly
        Assert.True(Enumerable.Range(0, 300).Count(i => Math.Abs(a[i] - b[i]) > 0.02 && result[i] != b[i]) > 100, "far from the base: blended toward it");
        var missing = Assert.Throws<ArgumentException>(() => Run(new NearSwapStrategy(), a, [b, b], global: new() { ["t"] = t }));
        Assert.Contains("nearswap", missing.Message, StringComparison.Ordinal);

        // mergekit's bytes in float32: its t / d is Python's float over a tensor, d.reciprocal() * t, each step rounded to
        // float32 (IEEE division and product, correctly rounded), then clamp, w * b + (1 - w) * a.
        var mergekit = a.Select((x, i) =>
        {
            var d = MathF.Max(MathF.Abs(x - b[i]), 1e-6f);
            var w = Math.Clamp((1f / d) * (float)t, 0f, 1f);
            return (w * b[i]) + ((1f - w) * x);
        }).ToArray();
        Assert.Equal(mergekit.Select(BitConverter.SingleToInt32Bits), result.Select(BitConverter.SingleToInt32Bits));
        // A division, t / d, rounds differently somewhere in these values: the check above can tell the two apart.
        Assert.Contains(Enumerable.Range(0, 300), i =>
        {
            var d = MathF.Max(MathF.Abs(a[i] - b[i]), 1e-6f);
            return Math.Clamp((float)t / d, 0f, 1f) != Math.Clamp((1f / d) * (float)t, 0f, 1f);
        });
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Multislerp_is_mergekits_tangent_space_barycentre(bool withBase)
    {
        var rng = new Random(4);
        const int n = 240;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1, 0.3), Random(rng, n, 0.5, 0.1), Random(rng, n, 2, -0.2)];
        double[] weights = [1.0, 2.0, 0.5];
        var expected = ReferenceMultislerp(xs, weights, withBase ? b : null, normalize: true, eps: 1e-8);
        var whole = Run(new MultiSlerpStrategy(), withBase ? b : null, xs, weights, shape: [24, 10]);
        Close(expected, whole, 1e-5);
        var streamed = Stream(new MultiSlerpStrategy(), withBase ? b : new float[n], xs, weights, null, null, 0, 7, out var passes);
        if (withBase)
        {
            Assert.Equal(1, passes);
            Close(expected, streamed, 1e-5);
        }
        var unnormalized = Run(new MultiSlerpStrategy(), withBase ? b : null, xs, weights, global: new() { ["normalize_weights"] = false }, shape: [24, 10]);
        Close(ReferenceMultislerp(xs, weights, withBase ? b : null, normalize: false, eps: 1e-8), unnormalized, 1e-5);
    }

    [Fact]
    public void Multislerp_edge_cases_follow_mergekit()
    {
        float[] v = [1, 2, 3, 4];
        float[] minus = [-1, -2, -3, -4];
        // One model: returned as it is. Two antipodal models with equal weights: the weighted sum (here zero).
        Close([1, 2, 3, 4], Run(new MultiSlerpStrategy(), null, [v], [1.0]));
        Close([0, 0, 0, 0], Run(new MultiSlerpStrategy(), null, [v, minus], [1.0, 1.0]));
        var error = Assert.Throws<InvalidOperationException>(() => Run(new MultiSlerpStrategy(), null, [v, minus, v, minus], [1.0, 1.0, 1.0, 1.0]));
        Assert.Contains("antipodal", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Karcher_is_mergekits_riemannian_mean_with_the_base_among_the_inputs(bool withBase)
    {
        var rng = new Random(6);
        const int n = 180;
        var b = Random(rng, n, 1, 0.5);
        float[][] xs = [Random(rng, n, 1, 0.4), Random(rng, n, 1.5, 0.2), Random(rng, n, 0.8, 0.6)];
        float[][] inputs = withBase ? [b, .. xs] : xs;
        foreach (var (maxIter, tol) in new[] { (10, 1e-5), (2, 1e-5), (50, 1e-9) })
        {
            var expected = ReferenceKarcher(inputs, maxIter, tol);
            var global = new Dictionary<string, object> { ["max_iter"] = (long)maxIter, ["tol"] = tol };
            var result = Run(new KarcherStrategy(), withBase ? b : null, xs, global: global, shape: [18, 10]);
            Close(expected, result, 1e-5);
            if (withBase)
            {
                Close(expected, Stream(new KarcherStrategy(), b, xs, [1.0, 1.0, 1.0], global, null, 0, 11, out _), 1e-5);
            }
        }
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(false, true)]
    public void Nuslerp_interpolates_per_tensor_row_or_column_as_mergekit(bool flatten, bool rowWise)
    {
        var rng = new Random(10);
        const int rows = 6, columns = 10, n = rows * columns;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1, 0.2), Random(rng, n, 1.3, -0.1)];
        double[] weights = [1.0, 3.0]; // t = 0.75
        var global = new Dictionary<string, object> { ["nuslerp_flatten"] = flatten, ["nuslerp_row_wise"] = rowWise };
        var expected = ReferenceNuslerp(0.75, xs[0], xs[1], b, rows, columns, flatten, rowWise);
        Close(expected, Run(new NuSlerpStrategy(), b, xs, weights, global, shape: [rows, columns]), 1e-5);
        Close(expected, Stream(new NuSlerpStrategy(), b, xs, weights, global, null, 0, 7, out _, shape: [rows, columns]), 1e-5);
        // Without a base the models themselves are interpolated.
        Close(ReferenceNuslerp(0.75, xs[0], xs[1], null, rows, columns, flatten, rowWise), Run(new NuSlerpStrategy(), null, xs, weights, global, shape: [rows, columns]), 1e-5);
        // Colinear task vectors: the linear interpolation.
        var doubled = xs[0].Select((x, i) => b[i] + (2 * (x - b[i]))).ToArray();
        Close([.. xs[0].Select((x, i) => b[i] + ((0.25 + (0.75 * 2)) * ((double)x - b[i])))], Run(new NuSlerpStrategy(), b, [xs[0], doubled], weights, shape: [rows, columns]), 1e-5);
    }

    /// <summary>mergekit's nuslerp on (task) vectors: per tensor, per row (last dimension) or per column (row_wise), in double.</summary>
    private static double[] ReferenceNuslerp(double t, float[] x0, float[] x1, float[]? baseValues, int rows, int columns, bool flatten, bool rowWise)
    {
        var n = rows * columns;
        var v0 = x0.Select((x, i) => (double)x - (baseValues?[i] ?? 0)).ToArray();
        var v1 = x1.Select((x, i) => (double)x - (baseValues?[i] ?? 0)).ToArray();
        var groups = flatten ? [Enumerable.Range(0, n).ToArray()]
            : rowWise ? Enumerable.Range(0, columns).Select(c => Enumerable.Range(0, rows).Select(r => (r * columns) + c).ToArray()).ToArray()
            : Enumerable.Range(0, rows).Select(r => Enumerable.Range(r * columns, columns).ToArray()).ToArray();
        var result = new double[n];
        foreach (var g in groups)
        {
            var n0 = Math.Max(Math.Sqrt(g.Sum(i => v0[i] * v0[i])), 1e-7);
            var n1 = Math.Max(Math.Sqrt(g.Sum(i => v1[i] * v1[i])), 1e-7);
            var cos = Math.Clamp(g.Sum(i => v0[i] / n0 * (v1[i] / n1)), -1, 1);
            var theta = Math.Acos(cos);
            var sin = Math.Sin(theta);
            foreach (var i in g)
            {
                var value = Math.Abs(sin) < 1e-8 ? ((1 - t) * v0[i]) + (t * v1[i]) : ((Math.Sin((1 - t) * theta) * v0[i]) + (Math.Sin(t * theta) * v1[i])) / sin;
                result[i] = value + (baseValues?[i] ?? 0);
            }
        }
        return result;
    }

    [Fact]
    public void Arcee_fusion_takes_the_model_where_its_importance_is_an_outlier()
    {
        var rng = new Random(40);
        const int rows = 16, columns = 25, n = rows * columns;
        var a = Random(rng, n);
        var b = a.Select((v, i) => v + (float)((i % 7 == 0 ? 1.0 : 0.05) * (rng.NextDouble() - 0.5))).ToArray();
        var result = Run(new ArceeFusionStrategy(), a, [b], shape: [rows, columns]);
        // Reference in double: importance |b - a| * KL(softmax(b) || softmax(a)) per row, threshold median + 1.5 IQR.
        var importance = new double[n];
        for (var r = 0; r < rows; r++)
        {
            var row = Enumerable.Range(r * columns, columns).ToArray();
            var p = Softmax([.. row.Select(i => (double)b[i])]);
            var q = Softmax([.. row.Select(i => (double)a[i])]);
            var kl = p.Select((pi, j) => (pi + 1e-8) * Math.Log((pi + 1e-8) / (q[j] + 1e-8))).Sum();
            foreach (var i in row)
            {
                importance[i] = Math.Abs((double)b[i] - a[i]) * kl;
            }
        }
        var sorted = importance.Order().ToArray();
        double At(double quantile) => sorted[(int)(quantile * (n - 1))];
        var threshold = At(0.5) + (1.5 * (At(0.75) - At(0.25)));
        var taken = 0;
        for (var i = 0; i < n; i++)
        {
            var expected = importance[i] >= threshold ? b[i] : a[i];
            Assert.True(Math.Abs(expected - result[i]) < 1e-6, $"element {i}: importance {importance[i]} vs threshold {threshold}");
            taken += importance[i] >= threshold ? 1 : 0;
        }
        Assert.InRange(taken, 1, n / 2);
    }

    private static double[] Softmax(double[] x)
    {
        var max = x.Max();
        var e = x.Select(v => Math.Exp(v - max)).ToArray();
        return [.. e.Select(v => v / e.Sum())];
    }

    /// <summary>mergekit's multislerp, step by step (projection, tangent space, exponential map), in double.</summary>
    private static double[] ReferenceMultislerp(float[][] xs, double[] weight, float[]? baseValues, bool normalize, double eps)
    {
        var n = xs[0].Length;
        var k = xs.Length;
        var v = xs.Select(x => x.Select((e, i) => (double)e - (baseValues?[i] ?? 0)).ToArray()).ToArray();
        var w = normalize ? weight.Select(x => x / weight.Sum()).ToArray() : weight;
        var norms = v.Select(row => Math.Sqrt(row.Sum(e => e * e))).ToArray();
        var units = v.Select((row, i) => row.Select(e => e / (norms[i] + eps)).ToArray()).ToArray();
        var mean = new double[n];
        for (var i = 0; i < k; i++)
        {
            for (var e = 0; e < n; e++)
            {
                mean[e] += units[i][e] * w[i];
            }
        }
        var meanNorm = Math.Sqrt(mean.Sum(e => e * e));
        mean = [.. mean.Select(e => e / meanNorm)];
        var tangent = new double[n];
        for (var i = 0; i < k; i++)
        {
            var dot = units[i].Select((e, j) => e * mean[j]).Sum();
            for (var e = 0; e < n; e++)
            {
                tangent[e] += (units[i][e] - (dot * mean[e])) * w[i];
            }
        }
        var tangentNorm = Math.Sqrt(tangent.Sum(e => e * e)) + eps;
        var averageNorm = norms.Select((x, i) => x * w[i]).Sum();
        return [.. mean.Select((m, e) => (((m * Math.Cos(tangentNorm)) + (tangent[e] * (Math.Sin(tangentNorm) / tangentNorm))) * averageNorm) + (baseValues?[e] ?? 0))];
    }

    /// <summary>mergekit's karcher_merge_tensors, step by step, in double (equal weights over every input).</summary>
    private static double[] ReferenceKarcher(float[][] tensors, int maxIter, double tol)
    {
        var n = tensors[0].Length;
        var k = tensors.Length;
        var alphas = Enumerable.Repeat(1.0 / k, k).ToArray();
        var norms = tensors.Select(t => Math.Sqrt(t.Sum(e => (double)e * e))).ToArray();
        var units = tensors.Select((t, i) => t.Select(e => norms[i] == 0 ? 0 : e / norms[i]).ToArray()).ToArray();
        var valid = Enumerable.Range(0, k).Where(i => norms[i] > tol).ToArray();
        var a = valid.Select(i => alphas[i] / valid.Sum(j => alphas[j])).ToArray();
        static double Norm(double[] x) => Math.Sqrt(x.Sum(e => e * e));
        var u = new double[n];
        for (var j = 0; j < valid.Length; j++)
        {
            for (var e = 0; e < n; e++)
            {
                u[e] += a[j] * units[valid[j]][e];
            }
        }
        var normU = Norm(u);
        u = normU < tol ? (double[])units[valid[0]].Clone() : [.. u.Select(e => e / normU)];
        for (var iteration = 0; iteration < maxIter; iteration++)
        {
            var step = new double[n];
            for (var j = 0; j < valid.Length; j++)
            {
                var ui = units[valid[j]];
                var dot = Math.Clamp(u.Select((e, i) => e * ui[i]).Sum(), -1, 1);
                var theta = Math.Acos(dot);
                if (theta < tol)
                {
                    continue;
                }
                for (var e = 0; e < n; e++)
                {
                    step[e] += a[j] * (theta / Math.Sin(theta)) * (ui[e] - (dot * u[e]));
                }
            }
            var normT = Norm(step);
            if (normT < tol)
            {
                break;
            }
            u = [.. u.Select((e, i) => (Math.Cos(normT) * e) + (Math.Sin(normT) * (step[i] / normT)))];
            var length = Norm(u);
            if (length > tol)
            {
                u = [.. u.Select(e => e / length)];
            }
        }
        var s = alphas.Select((x, i) => x * norms[i]).Sum();
        return [.. u.Select(e => s * e)];
    }
}
