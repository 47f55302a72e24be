using SensMerging.Strategies.Common;
using TorchSharp;
using static SensMerging.Strategies.Tests.MergeHarness;

namespace SensMerging.Strategies.Tests;

public sealed class DareTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Density_one_is_plain_task_arithmetic_and_ties(bool torchPath)
    {
        var rng = new Random(1);
        var b = Random(rng, 50);
        float[][] xs = [Random(rng, 50), Random(rng, 50, 2)];
        double[] weights = [0.6, 0.9];
        var deltas = xs.Select(x => Reference.Delta(x, b)).ToArray();

        var linear = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, xs, weights, new() { ["lambda"] = 0.8 }, seed: 42, shape: [5, 10], torchPath: torchPath);
        Close(Reference.Combine(b, deltas, weights, consensus: false, normalize: false, 0.8), linear);

        var ties = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), b, xs, weights, new() { ["normalize"] = true }, seed: 42, shape: [5, 10], torchPath: torchPath);
        Close(Reference.Combine(b, deltas, weights, consensus: true, normalize: true, 1.0), ties);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Density_half_drops_about_half_and_rescales_survivors_to_the_L1_norm_as_mergekit(bool torchPath)
    {
        const int n = 100_000;
        var rng = new Random(2);
        var b = Random(rng, n);
        var x = Random(rng, n, 1, 0.1);
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, [x], perModel: [new() { ["density"] = 0.5 }], seed: 1234, shape: [100, 1000], torchPath: torchPath);
        // mergekit (since v0.1.0): the kept entries are scaled by sum|delta| / sum|kept delta| of the tensor, not 1/density.
        var delta = Reference.Delta(x, b);
        var kept = delta.Select((d, i) => result[i] == b[i] ? 0.0 : d).ToArray();
        var expected = Reference.RescaleL1(delta, kept);
        var factor = delta.Sum(Math.Abs) / kept.Sum(Math.Abs);
        Assert.NotEqual(2.0, Math.Round(factor, 6)); // the L1 factor, not 1/density
        Close([.. expected.Select((d, i) => b[i] + d)], result);
        var dropped = kept.Count(d => d == 0);
        Assert.InRange(dropped / (double)n, 0.49, 0.51);

        var noRescale = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, [x], global: new() { ["rescale"] = false },
            perModel: [new() { ["density"] = 0.5 }], seed: 1234, shape: [100, 1000], torchPath: torchPath);
        for (var i = 0; i < n; i++)
        {
            // same seed: the same entries survive, now unscaled
            if (result[i] == b[i])
            {
                Assert.Equal(b[i], noRescale[i]);
            }
            else
            {
                Assert.True(Math.Abs(x[i] - noRescale[i]) <= 1e-5 * Math.Max(1, Math.Abs(x[i])), $"element {i}: {noRescale[i]} vs {x[i]}");
            }
        }
    }

    [Fact]
    public void A_fixed_seed_gives_the_recorded_bytes()
    {
        // Golden bytes: a change of the random stream, the keep rule or the L1 rescale shows here first.
        var rng = new Random(5);
        var b = Random(rng, 24 * 16);
        float[][] xs = [Random(rng, 24 * 16), Random(rng, 24 * 16, 0.5)];
        var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.5 }, new() { ["density"] = 0.7 } };
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), b, xs, [1.0, 0.8], perModel: perModel, seed: 2024, shape: [24, 16]);
        var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData([.. result.SelectMany(BitConverter.GetBytes)]));
        Assert.Equal("c1251b021693f9708551f56d86b6a855ba737d9a4f5268afd3c19ed2715ac35c", hash);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Same_seed_is_byte_identical_and_another_seed_differs(bool torchPath)
    {
        var rng = new Random(4);
        var b = Random(rng, 4096);
        float[][] xs = [Random(rng, 4096), Random(rng, 4096)];
        var perModel = new Dictionary<string, object>[] { new() { ["density"] = 0.3 }, new() { ["density"] = 0.7 } };
        var first = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), b, xs, [1.0, 0.5], perModel: perModel, seed: 99, shape: [64, 64], torchPath: torchPath);
        var second = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), b, xs, [1.0, 0.5], perModel: perModel, seed: 99, shape: [64, 64], torchPath: torchPath);
        var other = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), b, xs, [1.0, 0.5], perModel: perModel, seed: 100, shape: [64, 64], torchPath: torchPath);
        Assert.Equal(BitConverter.GetBytes(0f).Length * first.Length, first.SelectMany(BitConverter.GetBytes).Count());
        Assert.True(first.SelectMany(BitConverter.GetBytes).SequenceEqual(second.SelectMany(BitConverter.GetBytes)));
        Assert.False(first.SequenceEqual(other));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Dare_ties_elects_signs_over_the_sparsified_deltas(bool torchPath)
    {
        // The drop mask of model i comes from seed + i: recover it by sparsifying model i alone with seed + i.
        var rng = new Random(6);
        const int n = 2000;
        var b = Random(rng, n);
        float[][] xs = [Random(rng, n, 1), Random(rng, n, 1.5), Random(rng, n, 0.7)];
        double[] densities = [0.5, 0.4, 0.8];
        double[] weights = [0.9, 0.6, 1.1];
        const long seed = 31;
        var sparse = new double[xs.Length][];
        for (var i = 0; i < xs.Length; i++)
        {
            var single = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, [xs[i]], perModel: [new() { ["density"] = densities[i] }], seed: seed + i, shape: [40, 50], torchPath: torchPath);
            sparse[i] = [.. single.Select((v, e) => (double)v - b[e])];
        }
        var result = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies), b, xs, weights, new() { ["normalize"] = true },
            [.. densities.Select(d => new Dictionary<string, object> { ["density"] = d })], seed: seed, shape: [40, 50], torchPath: torchPath);
        Close(Reference.Combine(b, sparse, weights, consensus: true, normalize: true, 1.0), result, 1e-4);
    }
    [Fact]
    public void The_libtorch_path_drops_exactly_the_entries_the_fused_kernel_drops()
    {
        const int rows = 37;
        const int cols = 29;
        var rng = new Random(6);
        var b = Random(rng, rows * cols);
        var x = Random(rng, rows * cols, 1, 0.2);
        Dictionary<string, object>[] perModel = [new() { ["density"] = 0.3 }];
        var direct = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, [x], perModel: perModel, seed: 77, shape: [rows, cols]);
        var general = Run(new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareLinear), b, [x], perModel: perModel, seed: 77, shape: [rows, cols], torchPath: true);
        var kept = 0;
        for (var e = 0; e < rows * cols; e++)
        {
            Assert.Equal(direct[e] == b[e], general[e] == b[e]);
            Assert.Equal(direct[e], general[e], 1e-6f);
            kept += direct[e] == b[e] ? 0 : 1;
        }
        Assert.InRange(kept, 0.2 * rows * cols, 0.4 * rows * cols);
    }

    [Fact]
    public void The_device_counter_mask_equals_the_scalar_counter_stream_at_any_start()
    {
        const long start = 5_000_000_123;
        var key = CounterRandom.StreamKey(-98765);
        var threshold = CounterRandom.Threshold(0.42);
        using var keep = torch.empty(7, 9);
        using var z = torch.empty(7, 9, torch.ScalarType.Int64);
        using var t = torch.empty(7, 9, torch.ScalarType.Int64);
        CounterRandom.KeepMask(keep, start, key, threshold, z, t);
        var values = keep.reshape(-1).data<float>().ToArray();
        for (var k = 0; k < values.Length; k++)
        {
            Assert.Equal(CounterRandom.Uniform24(key, start + k) < threshold ? 1f : 0f, values[k]);
        }
        Assert.Contains(0f, values);
        Assert.Contains(1f, values);
    }
}
