using System.Runtime.InteropServices;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>
/// The fused bfloat16 passes (<see cref="BFloat16TaskArithmetic"/>) against the libtorch operations they replace, which
/// are mergekit's own torch calls: the same output bits on inputs chosen to hit the edges of the rounding (signed
/// zeros in the base and the deltas, magnitude ties at the threshold, subnormals, exponents far apart, weights that
/// cancel, lambda 1 and not, normalize on and off, small tensors breadcrumbs drops whole).
/// </summary>
public sealed class BFloat16FusedTests
{
    public static TheoryData<string, bool, double, int> Cases()
    {
        var data = new TheoryData<string, bool, double, int>
        {
            // Negative n: every weight negated (task negation), so the weighted zero deltas are all -0.
            { "ties", true, 0.7, -4099 },
            { "task_arithmetic", false, 1.0, -4099 },
        };
        foreach (var method in new[] { "task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties" })
        {
            foreach (var normalize in new[] { true, false })
            {
                data.Add(method, normalize, 0.7, 4099);
                data.Add(method, normalize, 1.0, 257);
            }
        }
        data.Add("breadcrumbs", false, 1.0, 60); // gamma * n < 1: mergekit drops the whole task vector
        data.Add("ties", true, 1.3, 1 << 16);
        // DARE's random drops with and without mergekit's L1 rescale (its default), and the rescale on the magnitude methods
        // ("+rescale"; torch sums the norms: above 32768 elements in parallel chunks).
        foreach (var method in new[] { "dare_ties", "dare_linear", "dare_ties+norescale", "ties+rescale", "breadcrumbs_ties+rescale" })
        {
            data.Add(method, true, 0.7, 4099);
            data.Add(method, false, 1.0, 257);
        }
        data.Add("dare_ties", true, 1.0, -4099);
        data.Add("dare_linear", true, 1.0, 1 << 17);
        data.Add("ties+rescale", false, 1.0, 1 << 17);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Fused_passes_give_the_libtorch_operations_bits(string method, bool normalize, double lambda, int n)
    {
        var rescale = method.EndsWith("+rescale", StringComparison.Ordinal) ? true : method.EndsWith("+norescale", StringComparison.Ordinal) ? false : (bool?)null;
        var variant = TaskArithmeticVariant.All.Single(v => v.Name == method.Split('+')[0]);
        var rng = new Random(n + (normalize ? 1 : 0) + method.Length);
        double[] weights = n < 0 ? [-0.7, -0.45, -1.1, -0.45] : [0.7, -0.45, 1.1, 0.45];
        n = Math.Abs(n);
        var global = new Dictionary<string, object> { ["lambda"] = lambda, ["normalize"] = normalize };
        if (rescale is { } r)
        {
            global["rescale"] = r;
        }
        var (parameters, settings) = Setup(variant, weights, global);

        var baseBits = Values(rng, n, null);
        using var baseTensor = Tensor(baseBits);
        var models = weights.Select(_ => Tensor(Values(rng, n, baseBits))).ToList();
        try
        {
            var fused = MergeBits(variant, settings, parameters, weights, baseTensor, models, allowFused: true);
            var reference = MergeBits(variant, settings, parameters, weights, baseTensor, models, allowFused: false);
            var differing = Enumerable.Range(0, n).Where(j => fused[j] != reference[j]).ToList();
            Assert.True(differing.Count == 0,
                $"{differing.Count} of {n} elements differ; first at {differing.FirstOrDefault()}: fused 0x{fused[differing.FirstOrDefault()]:X4}, libtorch 0x{reference[differing.FirstOrDefault()]:X4}");
        }
        finally
        {
            models.ForEach(m => m.Dispose());
        }
    }

    /// <summary>
    /// The same cases through the eight-lane passes (<see cref="FloatLanes8"/>, what a machine without AVX-512 runs) where
    /// this one may take sixteen: either width gives the libtorch operations' bits.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Eight_lane_passes_give_the_libtorch_operations_bits(string method, bool normalize, double lambda, int n) =>
        AtEightLanes(() => Fused_passes_give_the_libtorch_operations_bits(method, normalize, lambda, n));

    [Theory]
    [InlineData("ties")]
    [InlineData("dare_ties")]
    public void Eight_lane_passes_spread_NaN_and_infinity_as_the_libtorch_operations_do(string method) =>
        AtEightLanes(() => Fused_passes_spread_NaN_and_infinity_as_the_libtorch_operations_do(method));

    /// <summary>Runs <paramref name="test"/> with the fused passes held to eight lanes on this thread.</summary>
    internal static void AtEightLanes(Action test)
    {
        FloatLanes.EightOnly = true;
        try
        {
            test();
        }
        finally
        {
            FloatLanes.EightOnly = false;
        }
    }

    /// <summary>
    /// NaN and infinite inputs (a broken checkpoint: the engine warns, and mergekit merges them as torch does): the fused
    /// passes give the libtorch operations' bits for every variant, where a NaN or an infinity in the base or in one
    /// model's delta reaches the output through the sums, the magnitude ranks (a NaN's magnitude sorts above every number,
    /// as in torch) and the sign election: the same elements are NaN, the same are infinite, every other bit is equal.
    /// A NaN's own bit pattern is not compared: libtorch writes 0xFFFF from its vectorised bfloat16 conversion and 0x7FC0
    /// from its scalar one (the last elements of a tensor, as many as its CPU's vector width leaves over), so which pattern
    /// a given NaN gets depends on the machine; the fused passes write 0xFFFF everywhere.
    /// </summary>
    [Theory]
    [InlineData("task_arithmetic")]
    [InlineData("ties")]
    [InlineData("breadcrumbs_ties")]
    [InlineData("dare_ties")]
    [InlineData("dare_linear")]
    public void Fused_passes_spread_NaN_and_infinity_as_the_libtorch_operations_do(string method)
    {
        const int n = 4099;
        var variant = TaskArithmeticVariant.All.Single(v => v.Name == method);
        double[] weights = [0.7, -0.45, 1.1];
        var (parameters, settings) = Setup(variant, weights, new Dictionary<string, object> { ["lambda"] = 0.8 });
        var rng = new Random(method.Length);
        var baseBits = Values(rng, n, null);
        var modelBits = weights.Select(_ => Values(rng, n, baseBits)).ToArray();
        ushort[] specials = [0x7FC0, 0xFFC0, 0x7F80, 0xFF80, 0x7FA1]; // NaN, -NaN, +inf, -inf, a NaN with another payload
        for (var k = 0; k < 60; k++)
        {
            var j = rng.Next(n);
            var special = specials[k % specials.Length];
            if (k % 4 == 0)
            {
                baseBits[j] = special;
            }
            else
            {
                modelBits[k % modelBits.Length][j] = special;
            }
        }
        using var baseTensor = Tensor(baseBits);
        var models = modelBits.Select(Tensor).ToList();
        try
        {
            var fused = MergeBits(variant, settings, parameters, weights, baseTensor, models, allowFused: true);
            var reference = MergeBits(variant, settings, parameters, weights, baseTensor, models, allowFused: false);
            var nonFinite = reference.Count(b => (b & 0x7F80) == 0x7F80);
            Assert.True(nonFinite >= 20, $"only {nonFinite} non-finite outputs: the special values did not reach the output");
            static bool IsNaN(ushort bits) => (bits & 0x7F80) == 0x7F80 && (bits & 0x007F) != 0;
            var differing = Enumerable.Range(0, n).Where(j => fused[j] != reference[j] && !(IsNaN(fused[j]) && IsNaN(reference[j]))).ToList();
            Assert.True(differing.Count == 0,
                $"{differing.Count} of {n} elements differ; first at {differing.FirstOrDefault()}: fused 0x{fused[differing.FirstOrDefault()]:X4}, libtorch 0x{reference[differing.FirstOrDefault()]:X4}");
        }
        finally
        {
            models.ForEach(m => m.Dispose());
        }
    }

    private static readonly string[] Names = ["a", "b", "c", "d"];

    /// <summary>
    /// A variant's resolved parameters and settings for <paramref name="weights"/>: model i keeps density 0.3 + 0.2 i (the
    /// fourth 1.0, no drop), magnitude-outlier variants gamma 0.05.
    /// </summary>
    internal static (ResolvedParameters Parameters, TaskArithmeticSettings Settings) Setup(TaskArithmeticVariant variant, double[] weights, Dictionary<string, object> global)
    {
        var perModel = weights.Select((_, i) =>
        {
            var values = new Dictionary<string, object> { ["density"] = i == 3 ? 1.0 : 0.3 + (0.2 * i) };
            if (variant.Sparsification == SparsificationMethod.MagnitudeOutliers)
            {
                values["gamma"] = 0.05;
            }
            return values;
        }).ToArray();
        var parameters = MergeHarness.Parameters(GeneralizedTaskArithmeticStrategy.Create(variant), weights, global, perModel);
        return (parameters, TaskArithmeticSettings.Read(variant, parameters, weights, Names[..weights.Length], "model.layers.0.mlp.up_proj.weight"));
    }

    /// <summary>One whole-tensor bfloat16 merge of a flat tensor, through the fused passes or the libtorch operations.</summary>
    private static ushort[] MergeBits(
        TaskArithmeticVariant variant, TaskArithmeticSettings settings, ResolvedParameters parameters, double[] weights, Tensor baseTensor, List<Tensor> models, bool allowFused)
    {
        var n = baseTensor.shape[0];
        using var output = torch.empty(n, ScalarType.BFloat16);
        using var scratch = new TestScratch([n]);
        var request = new MergeTensorRequest
        {
            TensorName = "model.layers.0.mlp.up_proj.weight",
            LayerGroup = "model.layers.0",
            Base = baseTensor,
            Models = models,
            ModelNames = Names[..weights.Length],
            Weights = weights,
            Parameters = parameters,
            Output = output,
            Scratch = scratch,
            ComputeDType = ScalarType.BFloat16,
        };
        Assert.Equal(allowFused, BFloat16TaskArithmetic.Applies(request, variant, settings) && allowFused);
        HalfPrecisionTaskArithmetic.Merge(request, variant, settings, baseTensor, randomSeed: 17, allowFused);
        return MemoryMarshal.Cast<byte, ushort>(output.bytes).ToArray();
    }

    /// <summary>
    /// bfloat16 bit patterns: mostly normal values near 1e-2, with a share of +0, -0, subnormals, values far larger or
    /// smaller, and (for a model) entries equal to the base or differing from it by one repeated step, so deltas are
    /// zero and magnitudes tie; at every 20th element all models equal the base.
    /// </summary>
    internal static ushort[] Values(Random rng, int n, ushort[]? baseBits)
    {
        var values = new ushort[n];
        for (var j = 0; j < n; j++)
        {
            var pick = rng.Next(100);
            float value = pick switch
            {
                < 4 => 0f,
                < 8 => -0f,
                < 10 => (rng.Next(2) == 0 ? 1 : -1) * 1e-39f * rng.Next(1, 100), // subnormal
                < 13 => (float)(rng.NextDouble() - 0.5) * 1e4f,
                < 16 => (float)(rng.NextDouble() - 0.5) * 1e-8f,
                _ => (float)(rng.NextGaussian() * 0.02),
            };
            if (baseBits is not null && j % 20 == 7)
            {
                // Every model equal to the base here: all deltas zero, which puts signed zeros through every sum.
                value = BFloat16Bits.ToSingle(baseBits[j]);
            }
            else if (baseBits is not null && pick >= 16 && rng.Next(10) < 3)
            {
                // Equal to the base (zero delta) or the base plus a fixed step (tied magnitudes).
                value = BFloat16Bits.ToSingle(baseBits[j]) + (rng.Next(2) == 0 ? 0f : 0.0078125f);
            }
            values[j] = BFloat16Bits.FromSingle(value);
        }
        return values;
    }

    internal static Tensor Tensor(ushort[] bits)
    {
        var tensor = torch.empty(bits.Length, ScalarType.BFloat16);
        tensor.bytes = MemoryMarshal.AsBytes(bits.AsSpan());
        return tensor;
    }
}

internal static class RandomGaussian
{
    public static double NextGaussian(this Random rng) =>
        Math.Sqrt(-2.0 * Math.Log(1.0 - rng.NextDouble())) * Math.Cos(2.0 * Math.PI * rng.NextDouble());
}
